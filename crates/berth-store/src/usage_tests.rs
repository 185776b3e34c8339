//! Usage rollups, budget state and the webhook outbox.

use berth_proto::{BudgetAction, BudgetHold, BudgetSettings, NotifyFormat, UsageRow};

use super::*;
use crate::budgets::BudgetEvent;

fn this_month() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("berth.db")).unwrap();
    (dir, store)
}

fn web(requests: u64, memory: u64) -> UsageRow {
    UsageRow {
        app: "shop".into(),
        process: "web".into(),
        cpus: 1.0,
        memory_mb: 256,
        instance_seconds: 60.0,
        requests,
        bytes_out: requests * 10,
        memory_peak_bytes: memory,
        memory_avg_bytes: memory,
        volume_bytes: memory,
        ..UsageRow::default()
    }
}

#[test]
fn each_minute_is_added_to_its_hour_and_day() {
    let (_dir, store) = open();
    let hour = 1_796_601_600; // 2026-12-07T00:00Z
    store.add_usage(hour + 5, &[web(3, 100)]).unwrap();
    store.add_usage(hour + 65, &[web(4, 300)]).unwrap();
    store.add_usage(hour + 3_600, &[web(5, 200)]).unwrap();
    let minutes = store
        .usage(Some("shop"), "minute", hour, hour + 86_400)
        .unwrap();
    assert_eq!(minutes.len(), 3);
    assert_eq!((minutes[0].at, minutes[1].at), (hour, hour + 60));
    let hours = store
        .usage(Some("shop"), "hour", hour, hour + 86_400)
        .unwrap();
    assert_eq!(hours.len(), 2);
    assert_eq!(hours[0].requests, 7);
    assert_eq!(hours[0].bytes_out, 70);
    assert_eq!(hours[0].instance_seconds, 120.0);
    assert_eq!(hours[0].memory_peak_bytes, 300);
    assert_eq!(hours[0].memory_avg_bytes, 200);
    assert_eq!(hours[0].volume_bytes, 300);
    let days = store.usage(None, "day", hour, hour).unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].requests, 12);
    assert!(
        store
            .usage(Some("other"), "day", 0, u64::MAX >> 2)
            .unwrap()
            .is_empty()
    );
    // Minutes go after 2 days; hours and days are kept.
    assert_eq!(store.prune_usage(hour + 3 * 86_400).unwrap(), 3);
    assert_eq!(
        store.usage(None, "hour", 0, u64::MAX >> 2).unwrap().len(),
        2
    );
}

#[test]
fn a_hold_reaches_the_desired_state_and_the_servers_covers_every_app() {
    let (_dir, store) = open();
    store.create_app("shop").unwrap();
    store.create_app("blog").unwrap();
    let settings = BudgetSettings {
        monthly_usd: Some(1.0),
        on_exceed: BudgetAction::ScaleToZero,
        ..BudgetSettings::default()
    };
    store.set_budget("shop", Some(&settings)).unwrap();
    assert_eq!(store.budget_set_here("shop").unwrap(), Some(settings));
    assert!(store.set_budget("nope", None).is_err());
    let hold = BudgetHold {
        period: this_month(),
        actions: [("*".to_string(), BudgetAction::ScaleToZero)].into(),
        since: 1,
        reason: "monthly_usd 1".into(),
        throttle_rps: 1,
        server_wide: false,
        both: false,
        throttled: false,
    };
    let state = BudgetState {
        period: this_month(),
        alerted: vec![50, 80, 100],
        spiked: false,
        acted: true,
        settings_seen: None,
        hold: Some(hold.clone()),
    };
    store
        .add_notify_channel("http://127.0.0.1:1/hook", &[], NotifyFormat::Json, "k")
        .unwrap();
    let exceeded = BudgetEvent {
        kind: EventKind::BudgetExceeded,
        message: "crossed".into(),
        notify: Some(("budget.exceeded".into(), "{}".into())),
    };
    store
        .save_budget_state("shop", &state, &[exceeded])
        .unwrap();
    // The event and its webhook delivery were written with the state.
    assert_eq!(
        store.notify_deliveries(10).unwrap()[0].event,
        "budget.exceeded"
    );
    assert_eq!(
        store.events("shop", 0, 10).unwrap().last().unwrap().kind,
        EventKind::BudgetExceeded
    );
    assert_eq!(store.budget_state("shop").unwrap(), state);
    let desired = store.desired().unwrap();
    let of = |name: &str| {
        desired
            .iter()
            .find(|app| app.app == name)
            .unwrap()
            .hold
            .clone()
    };
    assert_eq!(of("shop"), Some(hold.clone()));
    assert_eq!(of("blog"), None);
    store.save_budget_state(SERVER_BUDGET, &state, &[]).unwrap();
    let desired = store.desired().unwrap();
    assert!(desired.iter().all(|app| app.hold.is_some()));
    // A hold of another month is over.
    let old = BudgetState {
        hold: Some(BudgetHold {
            period: "2001-01".into(),
            ..hold.clone()
        }),
        ..state.clone()
    };
    store.save_budget_state(SERVER_BUDGET, &old, &[]).unwrap();
    let desired = store.desired().unwrap();
    assert!(
        desired
            .iter()
            .find(|app| app.app == "blog")
            .unwrap()
            .hold
            .is_none()
    );
    store.destroy_app("shop").unwrap();
    assert_eq!(store.budget_set_here("shop").unwrap(), None);
}

#[test]
fn the_outbox_queues_per_matching_webhook_and_records_tries() {
    let (_dir, store) = open();
    let budget = store
        .add_notify_channel(
            "http://127.0.0.1:1/hook",
            &["budget.*".into()],
            NotifyFormat::Json,
            "k",
        )
        .unwrap();
    store
        .add_notify_channel("http://127.0.0.1:2/all", &[], NotifyFormat::Slack, "k2")
        .unwrap();
    assert_eq!(
        store
            .enqueue_notification("budget.alert", "shop", "{}")
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .enqueue_notification("deploy.failed", "shop", "{}")
            .unwrap(),
        1
    );
    // Of each webhook its oldest, and a claimed one is not due again
    // while its lease runs.
    let due = store.claim_due_deliveries(now_unix(), 10, 60, &[]).unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].channel, budget);
    assert_eq!(due[1].attempts, 1, "the claim counts the try");
    assert!(
        store
            .claim_due_deliveries(now_unix(), 10, 60, &[])
            .unwrap()
            .is_empty(),
        "leased, and the catch-all webhook's second waits for its first"
    );
    assert!(
        store
            .claim_due_deliveries(now_unix() + 61, 10, 60, &[due[1].channel.id])
            .unwrap()
            .iter()
            .all(|delivery| delivery.channel.id != due[1].channel.id),
        "a busy webhook gets nothing new"
    );
    store.record_delivery(due[0].id, Ok(())).unwrap();
    store
        .record_delivery(due[1].id, Err(("refused", None)))
        .unwrap();
    let next = store.claim_due_deliveries(now_unix(), 10, 60, &[]).unwrap();
    assert_eq!(next.len(), 1, "the catch-all webhook's second, in order");
    assert_eq!(next[0].event, "deploy.failed");
    store
        .record_delivery(next[0].id, Err(("timed out", Some(now_unix() + 600))))
        .unwrap();
    // A late answer for a try already recorded changes nothing.
    store.record_delivery(due[1].id, Ok(())).unwrap();
    let log = store.notify_deliveries(10).unwrap();
    let statuses: Vec<&str> = log
        .iter()
        .map(|delivery| delivery.status.as_str())
        .collect();
    assert_eq!(statuses, ["pending", "failed", "delivered"]);
    assert_eq!(log[0].last_error.as_deref(), Some("timed out"));
    store.remove_notify_channel(budget.id).unwrap();
    assert_eq!(store.notify_deliveries(10).unwrap().len(), 2);
    assert!(store.remove_notify_channel(budget.id).is_err());
}
