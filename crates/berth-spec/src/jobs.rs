//! Jobs: commands that run to completion, by hand or on a cron schedule,
//! as Cloud Run jobs do (tasks, parallelism, retries, a timeout per task).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A job of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Its name, unique in the app.
    pub name: String,
    /// The command each task runs (by `/bin/sh -c`, in the release's slug).
    pub command: String,
    /// A cron schedule (5 fields, or 6 with seconds first), if it runs on its own.
    pub schedule: Option<String>,
    /// The time zone of the schedule (IANA name); UTC when absent.
    pub time_zone: Option<String>,
    /// How many tasks one execution runs.
    pub tasks: u32,
    /// How many tasks run at once.
    pub parallelism: u32,
    /// How many times a failed task is retried.
    pub max_retries: u32,
    /// How long one attempt of a task may run before it is killed and counts as failed.
    #[serde(with = "crate::model::duration_ms")]
    pub timeout: Duration,
    /// Env vars on top of the app's.
    pub env: BTreeMap<String, String>,
    /// What a schedule does when the previous execution still runs.
    pub overlap: OverlapPolicy,
}

/// What a scheduled run does when an execution of the same job still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Do not start another one (the default).
    #[default]
    Skip,
    /// Start another one beside it.
    Allow,
    /// Cancel the running one, then start.
    Replace,
}

/// A parsed schedule with its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

impl Schedule {
    /// Parses a 5- or 6-field cron expression (or `@hourly`, …) in `time_zone` (UTC when absent).
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        let fields = expression.split_whitespace().count();
        if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "schedule `{expression}` has {fields} fields; use 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = croner::Cron::from_str(expression)
            .map_err(|err| format!("schedule `{expression}`: {err}"))?;
        let zone = match time_zone {
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                format!("unknown time zone `{name}` (use an IANA name such as Europe/Amsterdam)")
            })?,
            None => chrono_tz::UTC,
        };
        Ok(Schedule { cron, zone })
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_and_six_field_schedules_give_next_times() {
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 30).unwrap();
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        assert_eq!(
            every_minute.next_after(start),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 10, 1, 0).unwrap())
        );
        let every_five_seconds = Schedule::parse("*/5 * * * * *", None).unwrap();
        assert_eq!(
            every_five_seconds.next_after(start),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 35).unwrap())
        );
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        let nine_in_amsterdam = Schedule::parse("0 9 * * *", Some("Europe/Amsterdam")).unwrap();
        // CET is UTC+1 in November.
        assert_eq!(
            nine_in_amsterdam.next_after(start),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        assert!(
            Schedule::parse("61 * * * *", None)
                .unwrap_err()
                .contains("61 * * * *")
        );
        assert!(
            Schedule::parse("* * *", None)
                .unwrap_err()
                .contains("3 fields")
        );
        assert!(
            Schedule::parse("* * * * *", Some("Mars/Olympus"))
                .unwrap_err()
                .contains("unknown time zone")
        );
    }
}
