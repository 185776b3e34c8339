//! Prices for a fixed month of usage, against figures computed by hand
//! from the shipped tables.

use berth_proto::{BudgetSettings, UsageRow};

use super::*;

/// November 2026 of an app `shop`: `web` (1 CPU, 256 MiB) ran all month
/// (720 h) and was busy 100,000 s serving 3 million requests and 5 GB;
/// `worker` (1 CPU, 512 MiB) ran half of it; a 10 GB volume, a 2 GB
/// database and 15 GB of its backups every day.
fn november() -> Vec<UsageRow> {
    let mut rows = vec![
        UsageRow {
            app: "shop".into(),
            process: "web".into(),
            cpus: 1.0,
            memory_mb: 256,
            instance_seconds: 2_592_000.0,
            busy_seconds: 100_000.0,
            requests: 3_000_000,
            bytes_in: 1_000_000_000,
            bytes_out: 5_000_000_000,
            ..UsageRow::default()
        },
        UsageRow {
            app: "shop".into(),
            process: "worker".into(),
            cpus: 1.0,
            memory_mb: 512,
            instance_seconds: 1_296_000.0,
            ..UsageRow::default()
        },
    ];
    for day in 0..30 {
        rows.push(UsageRow {
            app: "shop".into(),
            at: 1_793_491_200 + day * 86_400,
            volume_bytes: 10_000_000_000,
            database_bytes: 2_000_000_000,
            backup_bytes: 15_000_000_000,
            ..UsageRow::default()
        });
    }
    rows
}

fn priced(price_as: &str, server: ServerShare) -> berth_proto::ProviderCost {
    let tables = PriceTable::load(None).unwrap();
    let (table, plan) = find_plan(&tables, price_as).unwrap();
    let month = Month {
        name: "2026-11".into(),
        days: 30,
        fraction: 1.0,
    };
    price_plan(table, plan, &november(), &month, server)
}

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} is not {expected}"
    );
}

#[test]
fn cloud_run_request_based_bills_busy_time_and_requests_after_the_free_tier() {
    let cost = priced("cloud-run/request-based", ServerShare::default());
    // CPU: web busy 100,000 + worker (no requests, instance time)
    // 1,296,000 = 1,396,000 − 180,000 free = 1,216,000 × $0.000024.
    assert_close(cost.lines[0].usd, 29.184);
    // Memory: 25,000 + 648,000 − 360,000 = 313,000 GiB-s × $0.0000025.
    assert_close(cost.lines[1].usd, 0.7825);
    // Requests: 3M − 2M free = 1M × $0.40.
    assert_close(cost.lines[2].usd, 0.40);
    // Egress: 5 GB − 1 free = 4 × $0.12.
    assert_close(cost.lines[3].usd, 0.48);
    // Cloud SQL: 2 GB-months of storage × $0.17, 15 of backups × $0.08.
    assert_eq!(cost.lines[4].item, "database storage");
    assert_close(cost.lines[4].usd, 0.34);
    assert_eq!(cost.lines[5].item, "database backups");
    assert_close(cost.lines[5].usd, 1.20);
    assert_close(cost.total_usd, 30.8465 + 0.34 + 1.20);
    assert!(cost.notes[0].contains("worker"), "{:?}", cost.notes);
    assert_eq!(cost.valid_from, "2026-11-01");
    assert!(cost.source.starts_with("https://cloud.google.com/"));
}

#[test]
fn cloud_run_instance_based_bills_every_running_second() {
    let cost = priced("cloud-run/instance-based", ServerShare::default());
    // 3,888,000 − 240,000 vCPU-s × $0.000018; 1,296,000 − 450,000 GiB-s
    // × $0.000002; 4 GB × $0.12; the database as above.
    assert_close(cost.total_usd, 65.664 + 1.692 + 0.48 + 0.34 + 1.20);
}

#[test]
fn fly_bills_the_cheapest_machine_that_holds_each_size_by_the_hour() {
    let cost = priced("fly", ServerShare::default());
    // web: shared-cpu-1x 256 MB, 720 h × $1.94 / 730; worker: shared-cpu-1x
    // 512 MB (cheaper than shared-cpu-2x), 360 h × $3.19 / 730.
    assert!(
        cost.lines[0]
            .item
            .contains("shared-cpu-1x (1 CPU, 256 MiB)")
    );
    assert_close(cost.lines[0].usd, 720.0 * 1.94 / 730.0);
    assert_close(cost.lines[1].usd, 360.0 * 3.19 / 730.0);
    // 5 GB × $0.02; 10 GB-months × $0.15.
    assert_close(cost.lines[2].usd, 0.10);
    assert_close(cost.lines[3].usd, 1.50);
    // The database on a 2 GB volume × $0.15; snapshots 15 − 10 free
    // GB-months × $0.08.
    assert_close(cost.lines[4].usd, 0.30);
    assert_close(cost.lines[5].quantity, 5.0);
    assert_close(cost.lines[5].usd, 0.40);
    assert_close(
        cost.total_usd,
        720.0 * 1.94 / 730.0 + 360.0 * 3.19 / 730.0 + 0.10 + 1.50 + 0.30 + 0.40,
    );
}

#[test]
fn fly_egress_is_priced_by_region() {
    let tables = PriceTable::load(None).unwrap();
    let (table, plan) = find_plan(&tables, "fly").unwrap();
    let month = Month {
        name: "2026-11".into(),
        days: 30,
        fraction: 1.0,
    };
    let priced = |region| {
        price_plan_in(
            table,
            plan,
            &november(),
            &month,
            ServerShare::default(),
            region,
        )
    };
    // 5 GB from Asia-Pacific at $0.04, from India at $0.12.
    let asia = priced(Some("asia-pacific"));
    assert_eq!(asia.lines[2].item, "data sent from asia-pacific");
    assert_close(asia.lines[2].usd, 0.20);
    assert_close(priced(Some("india")).lines[2].usd, 0.60);
    let unknown = priced(Some("mars"));
    assert_close(unknown.lines[2].usd, 0.10);
    assert!(unknown.notes[0].contains("`mars`") && unknown.notes[0].contains("europe"));
}

#[test]
fn render_rounds_up_to_an_instance_type_and_applies_free_bandwidth() {
    let cost = priced("render", ServerShare::default());
    // Starter has half a CPU: both groups need Standard ($25).
    assert!(cost.lines[0].item.contains("standard"));
    // 5 GB is inside the 100 GB included: nothing; volume 10 GB × $0.25;
    // Postgres storage 2 GB × $0.30, its backups included.
    assert_close(cost.lines[2].usd, 0.0);
    assert_close(cost.lines[4].usd, 0.60);
    assert!(
        cost.lines
            .iter()
            .all(|line| line.item != "database backups")
    );
    assert_close(
        cost.total_usd,
        720.0 * 25.0 / 730.0 + 360.0 * 25.0 / 730.0 + 2.5 + 0.60,
    );
}

#[test]
fn job_tasks_are_billed_for_their_whole_run_time_at_their_size() {
    let tables = PriceTable::load(None).unwrap();
    let month = Month {
        name: "2026-11".into(),
        days: 30,
        fraction: 1.0,
    };
    let mut rows = november();
    // Task attempts of job `nightly` (2 CPUs, 1 GiB): an hour in all.
    for _ in 0..4 {
        rows.push(UsageRow {
            app: "shop".into(),
            process: "job-nightly".into(),
            cpus: 2.0,
            memory_mb: 1024,
            job_seconds: 900.0,
            ..UsageRow::default()
        });
    }
    let (table, plan) = find_plan(&tables, "cloud-run/request-based").unwrap();
    let cost = price_plan(table, plan, &rows, &month, ServerShare::default());
    // 7,200 vCPU-s and 3,600 GiB-s more than the services alone, and no
    // note that the job serves no requests (a job is billed while it runs).
    assert_close(cost.lines[0].usd, 29.184 + 7_200.0 * 0.000024);
    assert_close(cost.lines[1].usd, 0.7825 + 3_600.0 * 0.0000025);
    assert!(
        cost.notes.iter().all(|note| !note.contains("nightly")),
        "{:?}",
        cost.notes
    );
    let (table, plan) = find_plan(&tables, "fly").unwrap();
    let cost = price_plan(table, plan, &rows, &month, ServerShare::default());
    let job = cost
        .lines
        .iter()
        .find(|line| line.item.starts_with("job-nightly: 2 CPU, 1024 MiB"))
        .unwrap_or_else(|| panic!("{:?}", cost.lines));
    assert_close(job.quantity, 1.0);
}

#[test]
fn the_own_server_is_split_by_share_of_use() {
    // The app declared half of all vCPU-seconds on a $40 server.
    let server = ServerShare {
        usd_per_month: Some(40.0),
        all_vcpu_seconds: 7_776_000.0,
    };
    let cost = priced("own-server", server);
    assert_close(cost.total_usd, 20.0);
    let unpriced = priced("own-server", ServerShare::default());
    assert!(unpriced.notes[0].contains("--server-usd"));
}

#[test]
fn a_malformed_price_file_names_its_line_and_column() {
    let negative = "provider = \"x\"\ntitle = \"X\"\nvalid_from = \"2026-11-01\"\nsource = \"s\"\n\n[[plans]]\nname = \"p\"\ntitle = \"P\"\nbilled_time = \"instance\"\nvcpu_second = -1\n";
    let err = PriceTable::parse("x.toml", negative)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.toml:6:1: plan `p`: vcpu_second = -1"),
        "{err}"
    );
    let unknown_key = negative.replace("vcpu_second = -1", "vcpu_secnd = 1");
    let err = PriceTable::parse("x.toml", &unknown_key)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.toml:10:1:") && err.contains("vcpu_secnd"),
        "{err}"
    );
    let bad_date = negative.replace("2026-11-01", "Nov 2026");
    let err = PriceTable::parse("x.toml", &bad_date)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("x.toml:3:14:") && err.contains("Nov 2026"),
        "{err}"
    );
    let not_toml = "provider = \n";
    let err = PriceTable::parse("y.toml", not_toml)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("y.toml:1:"), "{err}");
}

#[test]
fn a_price_directory_replaces_a_shipped_provider() {
    let dir = std::env::temp_dir().join(format!("berth-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("fly.toml"),
        "provider = \"fly\"\ntitle = \"Fly\"\nvalid_from = \"2027-01-01\"\nsource = \"mine\"\n[[plans]]\nname = \"cheap\"\ntitle = \"Cheap\"\nbilled_time = \"instance\"\nvcpu_second = 1\n",
    )
    .unwrap();
    let tables = PriceTable::load(Some(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(tables.len(), 4);
    let (table, plan) = find_plan(&tables, "fly").unwrap();
    assert_eq!(
        (table.valid_from.as_str(), plan.name.as_str()),
        ("2027-01-01", "cheap")
    );
    let err = find_plan(&tables, "heroku").unwrap_err().to_string();
    assert!(err.contains("unknown provider `heroku`") && err.contains("cloud-run/request-based"));
    assert!(find_plan(&tables, "cloud-run/nope").is_err());
}

#[test]
fn budgets_measure_the_nearest_limit_and_alert_once_per_threshold() {
    let settings = BudgetSettings {
        monthly_usd: Some(10.0),
        requests: Some(1000),
        alert_at: vec![80, 50, 100],
        ..BudgetSettings::default()
    };
    let figures = MonthFigures {
        spent_usd: 5.5,
        requests: 820,
        ..MonthFigures::default()
    };
    let used = used(&settings, &figures);
    assert_close(used.percent, 82.0);
    assert!(used.limit.starts_with("requests 1000"));
    assert_eq!(due_alerts(&settings, used.percent, &[]), vec![50, 80]);
    assert_eq!(due_alerts(&settings, used.percent, &[50]), vec![80]);
    assert_eq!(due_alerts(&settings, 120.0, &[50, 80]), vec![100]);
    assert_close(projected(5.0, 0.5, 10.0), 10.0);
    assert!(is_spike(1.0, 2.4, SPIKE_FACTOR, 10.0));
    assert!(!is_spike(0.3, 2.4, SPIKE_FACTOR, 10.0));
    assert!(
        !is_spike(5.0, 0.0, SPIKE_FACTOR, 10.0),
        "no history, no spike"
    );
}

#[test]
fn calendar_months_have_their_days() {
    let december = CalendarMonth::of(1_796_601_600); // 2026-12-07
    assert_eq!(december.name, "2026-12");
    assert_eq!(december.days(), 31);
    assert_eq!(CalendarMonth::parse("2026-11").unwrap().days(), 30);
    assert_eq!(CalendarMonth::parse("2028-02").unwrap().days(), 29);
    assert_eq!(CalendarMonth::parse("2026-11").unwrap().end, december.start);
    assert!(CalendarMonth::parse("2026-13").is_err());
    assert!(CalendarMonth::parse("november").is_err());
}
