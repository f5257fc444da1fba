//! Usage reports: sums of the meters grouped by any of tenant, key, capability, model, model
//! type and day. Day-aligned ranges read the daily roll-ups (one row per key × model × day,
//! however many events); a range that cuts through a day reads the events themselves.

use serde::Serialize;

use crate::ledger::MS_PER_DAY;
use crate::{col, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Tenant,
    Key,
    Capability,
    Model,
    ModelType,
    Day,
}

impl GroupBy {
    pub const ALL: [GroupBy; 6] = [
        Self::Tenant,
        Self::Key,
        Self::Capability,
        Self::Model,
        Self::ModelType,
        Self::Day,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Key => "key",
            Self::Capability => "capability",
            Self::Model => "model",
            Self::ModelType => "model_type",
            Self::Day => "day",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Tenant => "tenant_id",
            Self::Key => "key_id",
            Self::Capability => "capability",
            Self::Model => "model",
            Self::ModelType => "model_type",
            Self::Day => "day",
        }
    }

    /// Parses `tenant,capability,...`; an unknown name is an error naming the allowed ones.
    pub fn parse_list(list: &str) -> Result<Vec<GroupBy>> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let group = Self::ALL
                .into_iter()
                .find(|g| g.name() == name)
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "unknown group_by '{name}'; use any of tenant, key, capability, model, model_type, day"
                    ))
                })?;
            if !out.contains(&group) {
                out.push(group);
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    pub group_by: Vec<GroupBy>,
    /// Inclusive, Unix ms.
    pub from_ms: Option<i64>,
    /// Exclusive, Unix ms.
    pub to_ms: Option<i64>,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
}

/// One row of a report: the grouped columns that were asked for, then the sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    pub events: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub search_units: i64,
    pub classifications: i64,
    pub cost_pico: i64,
    pub cost_usd: f64,
}

pub fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * MS_PER_DAY)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

impl Store {
    pub async fn report(&self, query: &ReportQuery) -> Result<Vec<ReportRow>> {
        let aligned = |ms: Option<i64>| ms.is_none_or(|ms| ms.rem_euclid(MS_PER_DAY) == 0);
        let from_rollups = aligned(query.from_ms) && aligned(query.to_ms);
        let (table, events, time_column, to_unit) = if from_rollups {
            ("usage_daily", "SUM(events)", "day", MS_PER_DAY)
        } else {
            ("usage_events", "COUNT(*)", "created_ms", 1)
        };
        let groups: Vec<&str> = query.group_by.iter().map(|g| g.column()).collect();
        let select_groups: String = groups.iter().map(|c| format!("{c}, ")).collect();
        let sum = |c: &str| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}");
        let mut sql = format!(
            "SELECT {select_groups}CAST({events} AS BIGINT) AS events, {}, {}, {}, {}, {} FROM {table} \
             WHERE ($1 IS NULL OR {time_column} >= $1) AND ($2 IS NULL OR {time_column} < $2) \
             AND ($3 IS NULL OR tenant_id = $3) AND ($4 IS NULL OR key_id = $4)",
            sum("input_tokens"),
            sum("output_tokens"),
            sum("search_units"),
            sum("classifications"),
            sum("cost_pico"),
        );
        if !groups.is_empty() {
            let list = groups.join(", ");
            sql.push_str(&format!(" GROUP BY {list} ORDER BY {list}"));
        } else {
            sql.push_str(" HAVING COUNT(*) > 0");
        }
        let rows = sqlx::query(&sql)
            .bind(query.from_ms.map(|ms| ms.div_euclid(to_unit)))
            .bind(query.to_ms.map(|ms| ms.div_euclid(to_unit)))
            .bind(query.tenant_id.as_deref())
            .bind(query.key_id.as_deref())
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let text = |g: GroupBy| -> Result<Option<String>> {
                if query.group_by.contains(&g) {
                    Ok(Some(col(row, g.column())?))
                } else {
                    Ok(None)
                }
            };
            let cost_pico: i64 = col(row, "cost_pico")?;
            out.push(ReportRow {
                tenant: text(GroupBy::Tenant)?,
                key: text(GroupBy::Key)?,
                capability: text(GroupBy::Capability)?,
                model: text(GroupBy::Model)?,
                model_type: text(GroupBy::ModelType)?,
                day: if query.group_by.contains(&GroupBy::Day) {
                    Some(day_name(col(row, "day")?))
                } else {
                    None
                },
                events: col(row, "events")?,
                input_tokens: col(row, "input_tokens")?,
                output_tokens: col(row, "output_tokens")?,
                search_units: col(row, "search_units")?,
                classifications: col(row, "classifications")?,
                cost_pico,
                cost_usd: crate::money::pico_to_usd(cost_pico),
            });
        }
        Ok(out)
    }
}

/// Reads a report bound: `YYYY-MM-DD` (a whole UTC day; as an end bound, the day is included),
/// an RFC 3339 time, or a Unix time in seconds or milliseconds.
pub fn parse_time(text: &str, end: bool) -> Result<i64> {
    let text = text.trim();
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let days = date
            .signed_duration_since(chrono::NaiveDate::default())
            .num_days();
        return Ok((days + i64::from(end)) * MS_PER_DAY);
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    // Unix time: numbers below 10^11 are seconds (10^11 ms is 1973; 10^11 s is year 5138).
    let number = text.parse::<i64>().map_err(|_| {
        StoreError::Invalid(format!(
            "'{text}' is not a date (YYYY-MM-DD), an RFC 3339 time or a Unix time"
        ))
    })?;
    Ok(if number.abs() < 100_000_000_000 {
        number.saturating_mul(1000)
    } else {
        number
    })
}

/// A report as CSV: the grouped columns asked for, then the sums.
pub fn to_csv(rows: &[ReportRow], group_by: &[GroupBy]) -> String {
    let mut header: Vec<&str> = group_by.iter().map(|g| g.name()).collect();
    header.extend([
        "events",
        "input_tokens",
        "output_tokens",
        "search_units",
        "classifications",
        "cost_usd",
    ]);
    let mut out = header.join(",");
    out.push('\n');
    for row in rows {
        let mut fields: Vec<String> = group_by
            .iter()
            .map(|g| {
                let value = match g {
                    GroupBy::Tenant => &row.tenant,
                    GroupBy::Key => &row.key,
                    GroupBy::Capability => &row.capability,
                    GroupBy::Model => &row.model,
                    GroupBy::ModelType => &row.model_type,
                    GroupBy::Day => &row.day,
                };
                csv_field(value.as_deref().unwrap_or_default())
            })
            .collect();
        fields.extend([
            row.events.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            row.search_units.to_string(),
            row.classifications.to_string(),
            format!("{:.12}", row.cost_usd),
        ]);
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// A Unix time in ms as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_bounds_read_days_times_and_unix_seconds_or_ms() {
        let day = parse_time("2026-11-29", false).expect("day");
        assert_eq!(day % MS_PER_DAY, 0);
        assert_eq!(
            parse_time("2026-11-29", true).expect("end"),
            day + MS_PER_DAY
        );
        assert_eq!(parse_time("2026-11-29T00:00:00Z", false).expect("rfc"), day);
        assert_eq!(
            parse_time(&(day / 1000).to_string(), false).expect("s"),
            day
        );
        assert_eq!(parse_time(&day.to_string(), false).expect("ms"), day);
        assert!(parse_time("yesterday", false).is_err());
    }
}
