//! The price book: unit prices per capability × model × model type, in versions that take
//! effect at a given time. A call is priced by the newest version in effect when it is admitted;
//! within it, a row for the exact model wins over the `*` row for every model.
//!
//! The defaults (version 1) mirror the hosted platform's public list prices: chat, generate and
//! summarize as Command R ($0.15 in / $0.60 out per 1M tokens), embed as Embed v3 ($0.10 per 1M
//! tokens), rerank as Rerank 3.5 ($2.00 per 1,000 searches). Classify has no public figure; we
//! charge $0.20 per 1,000 classifications. Custom models cost twice their base (the fine-tuned
//! Command R figures: $0.30 / $1.20).

use serde::{Deserialize, Serialize};

use crate::money::UNITS;
use crate::{col, now_ms, Capability, ModelType, Pico, Result, Store, StoreError, UnitPrices};

/// Any model without a row of its own.
pub const ANY_MODEL: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRow {
    pub capability: Capability,
    pub model: String,
    pub model_type: ModelType,
    pub unit: String,
    pub pico_per_unit: Pico,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceVersion {
    pub version: i64,
    pub effective_ms: i64,
    pub created_ms: i64,
    pub note: String,
    pub rows: Vec<PriceRow>,
}

/// Every version of the price book, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook {
    pub versions: Vec<PriceVersion>,
}

impl PriceBook {
    /// The version in effect at `ms`.
    pub fn in_effect(&self, ms: i64) -> Option<&PriceVersion> {
        self.versions
            .iter()
            .filter(|v| v.effective_ms <= ms)
            .max_by_key(|v| (v.effective_ms, v.version))
    }

    /// The version number and unit prices for a call at `ms`.
    pub fn prices(
        &self,
        ms: i64,
        capability: Capability,
        model: &str,
        model_type: ModelType,
    ) -> (i64, UnitPrices) {
        let Some(version) = self.in_effect(ms) else {
            return (0, UnitPrices::default());
        };
        let mut prices = UnitPrices::default();
        for wanted in [ANY_MODEL, model] {
            for row in version.rows.iter().filter(|r| {
                r.capability == capability && r.model_type == model_type && r.model == wanted
            }) {
                prices.set(&row.unit, row.pico_per_unit);
            }
        }
        (version.version, prices)
    }
}

fn default_rows() -> Vec<PriceRow> {
    const PER_MILLION: Pico = 1_000_000; // pico per unit for $1 per 1M units
    let mut rows = Vec::new();
    let mut add = |capability, unit: &str, base_pico: Pico| {
        for (model_type, factor) in [(ModelType::Base, 1), (ModelType::Custom, 2)] {
            rows.push(PriceRow {
                capability,
                model: ANY_MODEL.into(),
                model_type,
                unit: unit.into(),
                pico_per_unit: base_pico * factor,
            });
        }
    };
    for capability in [
        Capability::Chat,
        Capability::Generate,
        Capability::Summarize,
    ] {
        add(capability, "input_tokens", 150_000); // $0.15 / 1M
        add(capability, "output_tokens", 600_000); // $0.60 / 1M
    }
    add(Capability::Embed, "input_tokens", 100_000); // $0.10 / 1M
    add(Capability::Rerank, "search_units", 2_000 * PER_MILLION); // $2.00 / 1K
    add(Capability::Classify, "classifications", 200 * PER_MILLION); // $0.20 / 1K
    add(Capability::Search, "search_units", 500 * PER_MILLION); // $0.50 / 1K
    add(Capability::Guard, "classifications", 100 * PER_MILLION); // $0.10 / 1K
    rows
}

/// Writes version 1 when the book is empty (every node may try at once; one wins).
pub(crate) async fn seed_defaults(store: &Store) -> Result<()> {
    let existing = sqlx::query("SELECT version FROM price_versions LIMIT 1")
        .fetch_optional(store.pool())
        .await?;
    if existing.is_some() {
        return Ok(());
    }
    match store
        .insert_version(1, 0, "defaults: public list prices", &default_rows())
        .await
    {
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => Ok(()),
        other => other,
    }
}

impl Store {
    async fn insert_version(
        &self,
        version: i64,
        effective_ms: i64,
        note: &str,
        rows: &[PriceRow],
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO price_versions (version, effective_ms, created_ms, note) VALUES ($1, $2, $3, $4)",
        )
        .bind(version)
        .bind(effective_ms)
        .bind(now_ms())
        .bind(note)
        .execute(&mut *tx)
        .await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO prices (version, capability, model, model_type, unit, pico_per_unit) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(version)
            .bind(row.capability.as_str())
            .bind(&row.model)
            .bind(row.model_type.as_str())
            .bind(&row.unit)
            .bind(row.pico_per_unit)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn price_book(&self) -> Result<PriceBook> {
        let versions = sqlx::query(
            "SELECT version, effective_ms, created_ms, note FROM price_versions ORDER BY version",
        )
        .fetch_all(self.pool())
        .await?;
        let rows = sqlx::query(
            "SELECT version, capability, model, model_type, unit, pico_per_unit FROM prices ORDER BY version, capability, model, model_type, unit",
        )
        .fetch_all(self.pool())
        .await?;
        let mut book = PriceBook::default();
        for v in &versions {
            book.versions.push(PriceVersion {
                version: col(v, "version")?,
                effective_ms: col(v, "effective_ms")?,
                created_ms: col(v, "created_ms")?,
                note: col(v, "note")?,
                rows: Vec::new(),
            });
        }
        for r in &rows {
            let version: i64 = col(r, "version")?;
            let capability: String = col(r, "capability")?;
            let model_type: String = col(r, "model_type")?;
            let row = PriceRow {
                capability: Capability::parse(&capability)
                    .ok_or_else(|| StoreError::Invalid(format!("bad capability {capability}")))?,
                model: col(r, "model")?,
                model_type: ModelType::parse(&model_type)
                    .ok_or_else(|| StoreError::Invalid(format!("bad model type {model_type}")))?,
                unit: col(r, "unit")?,
                pico_per_unit: col(r, "pico_per_unit")?,
            };
            if let Some(v) = book.versions.iter_mut().find(|v| v.version == version) {
                v.rows.push(row);
            }
        }
        Ok(book)
    }

    /// Adds a version: the newest version's rows with `changes` laid over them, in effect from
    /// `effective_ms` (now when `None`). Returns the new version.
    pub async fn add_price_version(
        &self,
        effective_ms: Option<i64>,
        note: &str,
        changes: &[PriceRow],
    ) -> Result<PriceVersion> {
        for row in changes {
            if !UNITS.contains(&row.unit.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "unknown unit '{}'; units are {}",
                    row.unit,
                    UNITS.join(", ")
                )));
            }
            if row.pico_per_unit < 0 {
                return Err(StoreError::Invalid("prices must not be negative".into()));
            }
            if row.model.is_empty() || row.model.len() > 200 {
                return Err(StoreError::Invalid(
                    "model must be 1 to 200 characters (\"*\" for all)".into(),
                ));
            }
        }
        let now = now_ms();
        let effective_ms = effective_ms.unwrap_or(now);
        for _attempt in 0..5 {
            let book = self.price_book().await?;
            let latest = book.versions.last();
            let mut rows = latest.map(|v| v.rows.clone()).unwrap_or_default();
            for change in changes {
                let same = |r: &PriceRow| {
                    r.capability == change.capability
                        && r.model == change.model
                        && r.model_type == change.model_type
                        && r.unit == change.unit
                };
                match rows.iter_mut().find(|r| same(r)) {
                    Some(row) => row.pico_per_unit = change.pico_per_unit,
                    None => rows.push(change.clone()),
                }
            }
            let version = latest.map_or(1, |v| v.version + 1);
            match self
                .insert_version(version, effective_ms, note, &rows)
                .await
            {
                Ok(()) => {
                    return Ok(PriceVersion {
                        version,
                        effective_ms,
                        created_ms: now,
                        note: note.to_string(),
                        rows,
                    })
                }
                // Another admin added the same version number first: rebuild on top of theirs.
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(
            "the price book kept changing; try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_model_rows_override_the_wildcard() {
        let mut rows = default_rows();
        rows.push(PriceRow {
            capability: Capability::Chat,
            model: "big".into(),
            model_type: ModelType::Base,
            unit: "output_tokens".into(),
            pico_per_unit: 9,
        });
        let book = PriceBook {
            versions: vec![PriceVersion {
                version: 1,
                effective_ms: 0,
                created_ms: 0,
                note: String::new(),
                rows,
            }],
        };
        let (_, big) = book.prices(1, Capability::Chat, "big", ModelType::Base);
        assert_eq!(big.output_tokens, 9);
        assert_eq!(big.input_tokens, 150_000);
        let (_, other) = book.prices(1, Capability::Chat, "small", ModelType::Custom);
        assert_eq!(other.output_tokens, 1_200_000);
        assert_eq!(book.prices(-1, Capability::Chat, "x", ModelType::Base).0, 0);
    }
}
