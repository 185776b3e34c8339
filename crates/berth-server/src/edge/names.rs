//! Which names get their certificate from the ACME CA, and which from
//! berth's own.

use berth_router::RouteTable;

/// Whether `name`, if berth serves it, gets its certificate from the ACME
/// CA: a custom domain or an app's `APP.SUFFIX`, that a public CA can issue
/// for, of an app not `tls = "internal"`, not added `--tls internal`.
pub(crate) fn from_acme(table: &RouteTable, suffix: &str, name: &str) -> bool {
    if !berth_proto::publicly_certifiable(name) || table.tls_internal_domains.contains(name) {
        return false;
    }
    let Some(app) = table.app_for_host(name, suffix) else {
        return false;
    };
    let Some(route) = table.apps.get(app) else {
        return false;
    };
    !route.tls_internal
        && (table.domains.contains_key(name)
            || name
                .strip_suffix(suffix)
                .and_then(|head| head.strip_suffix('.'))
                == Some(app))
}

/// Every name the ACME CA is asked to certify, with the app serving it.
pub(crate) fn acme_names(table: &RouteTable, suffix: &str) -> Vec<(String, String)> {
    let apps = table
        .apps
        .keys()
        .map(|app| (app.clone(), format!("{app}.{suffix}")));
    let domains = table
        .domains
        .iter()
        .map(|(name, app)| (app.clone(), name.clone()));
    let mut names: Vec<(String, String)> = apps
        .chain(domains)
        .filter(|(_, name)| from_acme(table, suffix, name))
        .collect();
    names.sort_by(|a, b| a.1.cmp(&b.1));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acme_ca_certifies_public_names_berth_serves_and_no_others() {
        let mut table = RouteTable::default();
        table.apps.insert("shop".into(), Default::default());
        let lan = berth_router::AppRoute {
            tls_internal: true,
            ..Default::default()
        };
        table.apps.insert("nas".into(), lan);
        for (name, app) in [
            ("www.example.org", "shop"),
            ("lan.example.org", "shop"),
            ("files.example.org", "nas"),
            ("shop.lan", "shop"),
        ] {
            table.domains.insert(name.into(), app.into());
        }
        table.tls_internal_domains.insert("lan.example.org".into());
        let names: Vec<String> = acme_names(&table, "example.net")
            .into_iter()
            .map(|(app, name)| format!("{app} {name}"))
            .collect();
        assert_eq!(names, ["shop shop.example.net", "shop www.example.org"]);
        assert!(!from_acme(&table, "example.net", "other.example.org"));
        assert!(!from_acme(&table, "example.net", "ghost.example.net"));
        assert!(
            acme_names(&table, "localhost")
                .iter()
                .all(|(_, name)| name == "www.example.org")
        );
    }
}
