use super::*;

#[test]
fn names_and_quoting() {
    assert_eq!(database_name("my-shop"), "app_my_shop");
    let long = "a".repeat(63);
    let other = format!("{}b", "a".repeat(62));
    assert_eq!(database_name(&long).len(), 63);
    assert_ne!(database_name(&long), database_name(&other));
    assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    assert_eq!(quote_literal("it's"), "'it''s'");
}

#[tokio::test]
async fn apps_get_databases_only_they_can_open() {
    assert!(
        PgBinaries::find().is_ok(),
        "PostgreSQL is not installed (.ci/run installs it)"
    );
    let data = crate::tests::data_dir();
    let postgres = Postgres::new(data.path().join("postgres"));
    let shop = postgres.provision("shop", "shop-password-1").await.unwrap();
    let blog = postgres.provision("blog", "blog-password-2").await.unwrap();
    let client = connect(shop.port, &shop.name, &shop.password, &shop.name)
        .await
        .unwrap();
    client
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    // Blog's role cannot open shop's database, nor log in as shop.
    let denied = connect(shop.port, &blog.name, &blog.password, &shop.name).await;
    assert!(denied.is_err());
    let denied = connect(shop.port, &shop.name, &blog.password, &shop.name).await;
    assert!(denied.is_err());
    // Backup, delete, restore.
    let file = data.path().join("shop.dump");
    postgres.backup(&shop, &file).await.unwrap();
    client.batch_execute("DELETE FROM t").await.unwrap();
    postgres.restore(&shop, &file).await.unwrap();
    let row = client.query_one("SELECT x FROM t", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    drop(client);
    postgres.drop_database("shop").await.unwrap();
    assert!(
        connect(shop.port, &shop.name, &shop.password, &shop.name)
            .await
            .is_err()
    );
    postgres.stop().await;
}
