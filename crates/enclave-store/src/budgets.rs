//! Budgets per key and per tenant. A call reserves its largest possible cost before it runs,
//! with one conditional UPDATE per budget that a concurrent call on any node cannot slip past;
//! the ledger settles the real cost when the call succeeds, and a failed call releases its hold.
//! Holds of a node that died expire and are swept, so a crash can block money for a while but
//! never lets a budget be overspent.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Transaction};

use crate::{col, now_ms, Pico, Result, Store, StoreError};

/// How long a hold lasts if its call never settles (its node crashed). Longer than any call
/// runs; a call that outlives its hold still has its cost added to the budget when it settles.
pub const RESERVATION_TTL_MS: i64 = 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Monthly,
    /// Never resets.
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
            Self::Total => "total",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "daily" | "day" => Some(Self::Daily),
            "monthly" | "month" => Some(Self::Monthly),
            "total" | "lifetime" => Some(Self::Total),
            _ => None,
        }
    }

    /// The start of the period holding `ms`, and the start of the next one (None: never).
    pub fn bounds(self, ms: i64) -> (i64, Option<i64>) {
        let Some(at) = Utc.timestamp_millis_opt(ms).single() else {
            return (0, None);
        };
        let midnight = |y, m, d| {
            Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
                .single()
                .map(|t| t.timestamp_millis())
        };
        match self {
            Self::Total => (0, None),
            Self::Daily => {
                let start = midnight(at.year(), at.month(), at.day()).unwrap_or(0);
                (start, Some(start + 86_400_000))
            }
            Self::Monthly => {
                let start = midnight(at.year(), at.month(), 1).unwrap_or(0);
                let (y, m) = if at.month() == 12 {
                    (at.year() + 1, 1)
                } else {
                    (at.year(), at.month() + 1)
                };
                (start, midnight(y, m, 1))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSpec {
    pub limit_pico: Pico,
    pub period: Period,
}

impl BudgetSpec {
    /// The budget a request or command asks for, if any: an amount, optionally with a period.
    pub fn optional(usd: Option<f64>, period: Option<&str>) -> Result<Option<Self>> {
        match (usd, period) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(StoreError::Invalid("budget_period needs budget_usd".into())),
            (Some(usd), period) => Self::from_usd(usd, period).map(Some),
        }
    }

    /// A budget of `usd` per `period` (monthly when not given).
    pub fn from_usd(usd: f64, period: Option<&str>) -> Result<Self> {
        let limit_pico = crate::money::usd_to_pico(usd).ok_or_else(|| {
            StoreError::Invalid(format!(
                "budget_usd must be a non-negative amount, got {usd}"
            ))
        })?;
        let period = match period {
            None => Period::Monthly,
            Some(name) => Period::parse(name).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "budget_period must be daily, monthly or total, got '{name}'"
                ))
            })?,
        };
        Ok(Self { limit_pico, period })
    }
}

/// Money held for one call, to settle or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub request_id: String,
    pub amount_pico: Pico,
    /// (owner id, period start) of every budget held.
    pub holds: Vec<(String, i64)>,
}

/// A call that would exceed a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// "key" or "tenant".
    pub owner: &'static str,
    pub limit_pico: Pico,
    pub spent_pico: Pico,
    pub reserved_pico: Pico,
    pub needed_pico: Pico,
    pub period: Period,
    /// When the period resets (None: never).
    pub resets_ms: Option<i64>,
}

pub(crate) async fn put_budget(
    tx: &mut Transaction<'_, Any>,
    owner_id: &str,
    budget: BudgetSpec,
) -> Result<()> {
    if budget.limit_pico < 0 {
        return Err(StoreError::Invalid("a budget must not be negative".into()));
    }
    sqlx::query(
        "INSERT INTO budgets (owner_id, limit_pico, period) VALUES ($1, $2, $3) \
         ON CONFLICT (owner_id) DO UPDATE SET limit_pico = excluded.limit_pico, period = excluded.period",
    )
    .bind(owner_id)
    .bind(budget.limit_pico)
    .bind(budget.period.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends a call's holds: drops them (release: `settle` is `None`), or turns them into spend of
/// `cost` on every budget the call was admitted under — also one whose hold already expired and
/// was swept, so a long call is never left out of its budget. Budget rows are updated in one
/// order (by owner id: key ids sort before tenant ids, as `reserve` takes them), so concurrent
/// settlements and reservations cannot deadlock.
pub(crate) async fn finish_holds(
    tx: &mut Transaction<'_, Any>,
    request_id: &str,
    settle: Option<(Pico, &[(String, i64)])>,
) -> Result<()> {
    let rows = sqlx::query(
        "DELETE FROM reservations WHERE request_id = $1 RETURNING owner_id, period_start_ms, amount_pico",
    )
    .bind(request_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut held = BTreeMap::new();
    for row in &rows {
        let owner: String = col(row, "owner_id")?;
        let start: i64 = col(row, "period_start_ms")?;
        held.insert((owner, start), col::<i64>(row, "amount_pico")?);
    }
    let mut budgets: BTreeSet<(String, i64)> = held.keys().cloned().collect();
    let cost = match settle {
        Some((cost, admitted)) => {
            budgets.extend(admitted.iter().cloned());
            cost
        }
        None => 0,
    };
    for (owner, start) in budgets {
        let amount = held.get(&(owner.clone(), start)).copied().unwrap_or(0);
        sqlx::query(
            "UPDATE budget_periods SET reserved_pico = reserved_pico - $1, spent_pico = spent_pico + $2 \
             WHERE owner_id = $3 AND period_start_ms = $4",
        )
        .bind(amount)
        .bind(cost)
        .bind(&owner)
        .bind(start)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Holds `amount` against each budget given (a key's and its tenant's), all or none.
    pub async fn reserve(
        &self,
        request_id: &str,
        amount_pico: Pico,
        budgets: &[(&'static str, &str, BudgetSpec)],
    ) -> Result<Result<Reservation, BudgetExceeded>> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let mut holds = Vec::new();
        for (owner, owner_id, spec) in budgets {
            let (start, resets_ms) = spec.period.bounds(now);
            sqlx::query(
                "INSERT INTO budget_periods (owner_id, period_start_ms, spent_pico, reserved_pico) \
                 VALUES ($1, $2, 0, 0) ON CONFLICT (owner_id, period_start_ms) DO NOTHING",
            )
            .bind(*owner_id)
            .bind(start)
            .execute(&mut *tx)
            .await?;
            let held = sqlx::query(
                "UPDATE budget_periods SET reserved_pico = reserved_pico + $1 \
                 WHERE owner_id = $2 AND period_start_ms = $3 AND spent_pico + reserved_pico + $1 <= $4 \
                 RETURNING spent_pico",
            )
            .bind(amount_pico)
            .bind(*owner_id)
            .bind(start)
            .bind(spec.limit_pico)
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_none() {
                let row = sqlx::query(
                    "SELECT spent_pico, reserved_pico FROM budget_periods WHERE owner_id = $1 AND period_start_ms = $2",
                )
                .bind(*owner_id)
                .bind(start)
                .fetch_one(&mut *tx)
                .await?;
                let exceeded = BudgetExceeded {
                    owner,
                    limit_pico: spec.limit_pico,
                    spent_pico: col(&row, "spent_pico")?,
                    reserved_pico: col(&row, "reserved_pico")?,
                    needed_pico: amount_pico,
                    period: spec.period,
                    resets_ms,
                };
                tx.rollback().await?;
                return Ok(Err(exceeded));
            }
            sqlx::query(
                "INSERT INTO reservations (request_id, owner_id, period_start_ms, amount_pico, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(request_id)
            .bind(*owner_id)
            .bind(start)
            .bind(amount_pico)
            .bind(now + RESERVATION_TTL_MS)
            .execute(&mut *tx)
            .await?;
            holds.push((owner_id.to_string(), start));
        }
        tx.commit().await?;
        Ok(Ok(Reservation {
            request_id: request_id.to_string(),
            amount_pico,
            holds,
        }))
    }

    /// Gives back the hold of a call that failed.
    pub async fn release(&self, request_id: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        finish_holds(&mut tx, request_id, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Releases holds whose call never settled (their node died); returns how many.
    pub async fn sweep_expired_reservations(&self) -> Result<usize> {
        let expired =
            sqlx::query("SELECT DISTINCT request_id FROM reservations WHERE expires_ms < $1")
                .bind(now_ms())
                .fetch_all(self.pool())
                .await?;
        for row in &expired {
            let request_id: String = col(row, "request_id")?;
            self.release(&request_id).await?;
        }
        Ok(expired.len())
    }

    /// Spent and held money of a budget owner in the period holding now.
    pub async fn budget_state(&self, owner_id: &str, period: Period) -> Result<(Pico, Pico)> {
        let (start, _) = period.bounds(now_ms());
        let row = sqlx::query(
            "SELECT spent_pico, reserved_pico FROM budget_periods WHERE owner_id = $1 AND period_start_ms = $2",
        )
        .bind(owner_id)
        .bind(start)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok((col(&row, "spent_pico")?, col(&row, "reserved_pico")?)),
            None => Ok((0, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_and_month_start() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 31, 15, 30, 0)
            .single()
            .expect("time")
            .timestamp_millis();
        let (start, next) = Period::Daily.bounds(at);
        assert_eq!(start, at - (15 * 3600 + 30 * 60) * 1000);
        assert_eq!(next, Some(start + 86_400_000));
        let (month, next_month) = Period::Monthly.bounds(at);
        let jan = Utc
            .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
            .single()
            .expect("time")
            .timestamp_millis();
        assert_eq!(next_month, Some(jan));
        assert!(month < start);
        assert_eq!(Period::Total.bounds(at), (0, None));
    }
}
