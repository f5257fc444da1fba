//! The price book, kept in memory and re-read in the background.

use std::sync::Arc;

use enclave_store::{now_ms, Capability, ModelType, UnitPrices};

use super::Access;

impl Access {
    pub async fn refresh_prices(&self) -> Result<(), enclave_store::StoreError> {
        let book = self.store.price_book().await?;
        if let Ok(mut prices) = self.prices.write() {
            *prices = Arc::new(book);
        }
        Ok(())
    }

    /// The price-book version and unit prices for a call admitted now.
    pub fn prices(
        &self,
        capability: Capability,
        model: &str,
        model_type: ModelType,
    ) -> (i64, UnitPrices) {
        match self.prices.read() {
            Ok(book) => book.prices(now_ms(), capability, model, model_type),
            Err(_) => (0, UnitPrices::default()),
        }
    }
}
