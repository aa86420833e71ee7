//! On-demand prices for the controller's region, the only code that knows the AWS Price List
//! Query API. The catalog is priced from `OnDemandPrices`: the live Price List once it
//! answered (read again every 12 hours), over the region's bundled table (`tables`), or
//! another region's table standing in where the region has none. Reading the Price List runs
//! beside the catalog, never before it, so a Price List that is slow or unreachable costs a
//! launch nothing. The product documents are read in `price_list`.

pub mod price_list;
pub mod tables;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_pricing::types::{Filter, FilterType};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::aws::sdk_clients;
use tables::{PriceOrigin, Prices};

/// How often the live Price List is read again; AWS changes on-demand prices rarely.
pub const REFRESH: Duration = Duration::from_secs(12 * 60 * 60);
/// After a failed read, how long until the next try.
const RETRY: Duration = Duration::from_secs(30 * 60);
/// The longest one GetProducts call may take, retries included: a cluster without a route to
/// the endpoint fails this soon instead of holding the reader for minutes.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Price List endpoint nearest to `region`, or `None` where the commercial Price List
/// cannot be asked: GovCloud, China and the isolated partitions keep their own credentials
/// (China's list is in CNY), so their regions are priced from bundled tables only.
pub fn price_list_region(region: &str) -> Option<&'static str> {
    if region.is_empty()
        || region.starts_with("us-gov-")
        || region.starts_with("cn-")
        || region.contains("-iso")
    {
        None
    } else if region.starts_with("ap-") {
        Some("ap-south-1")
    } else if region.starts_with("eu-") {
        Some("eu-central-1")
    } else {
        Some("us-east-1")
    }
}

/// The Price List answered with an error, or with no price.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PricingError {
    #[error("GetProducts failed: {0}")]
    GetProducts(String),
    #[error("the Price List priced no instance type in {0}")]
    NothingPriced(String),
    #[error("no AWS region: set --region or AWS_REGION")]
    NoRegion,
    #[error("the commercial AWS Price List does not serve {0}")]
    NotServed(String),
}

/// `region`'s on-demand prices from the live Price List, in the bundled tables' format: what
/// `windlass prices` prints to refresh `data/<region>.tsv`. The region defaults to the
/// SDK's (AWS_REGION, the profile).
pub async fn live_table(region: Option<String>) -> Result<String, PricingError> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = region
        .or_else(|| config.region().map(ToString::to_string))
        .ok_or(PricingError::NoRegion)?;
    let price_list =
        PriceList::new(&config, &region).ok_or_else(|| PricingError::NotServed(region.clone()))?;
    let prices = price_list.on_demand_prices().await?;
    Ok(tables::format_table(&prices))
}

/// The Price List's on-demand EC2 prices for one region.
pub struct PriceList {
    client: aws_sdk_pricing::Client,
    region: String,
}

/// Which products one GetProducts query asks for, besides the region and Linux, on demand,
/// with no software preinstalled, for capacity in use: shared-tenancy instances; and the
/// metal sizes, which the Price List lists as dedicated bare-metal products.
const PRODUCT_QUERIES: [[(&str, &str); 2]; 2] = [
    [("tenancy", "Shared"), ("productFamily", "Compute Instance")],
    [
        ("tenancy", "Dedicated"),
        ("productFamily", "Compute Instance (bare metal)"),
    ],
];

impl PriceList {
    /// A reader of `region`'s prices from the nearest endpoint (`AWS_ENDPOINT_URL` and
    /// `AWS_ENDPOINT_URL_PRICING` override it, as for every client); `None` where
    /// `price_list_region` has none.
    pub fn new(config: &SdkConfig, region: &str) -> Option<Self> {
        let endpoint_region = price_list_region(region)?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(CALL_TIMEOUT)
            .build();
        let config = config
            .to_builder()
            .region(aws_config::Region::new(endpoint_region))
            .timeout_config(timeouts)
            .build();
        Some(Self {
            client: sdk_clients::pricing(&config),
            region: region.to_owned(),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Every instance type the Price List prices in the region, USD per hour.
    pub async fn on_demand_prices(&self) -> Result<Prices, PricingError> {
        let mut prices = Prices::new();
        for query in PRODUCT_QUERIES {
            for (name, price) in self.query(&query).await? {
                prices.entry(name).or_insert(price);
            }
        }
        if prices.is_empty() {
            return Err(PricingError::NothingPriced(self.region.clone()));
        }
        Ok(prices)
    }

    async fn query(&self, extra: &[(&str, &str)]) -> Result<Prices, PricingError> {
        let common = [
            ("regionCode", self.region.as_str()),
            ("operatingSystem", "Linux"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
            ("marketoption", "OnDemand"),
        ];
        let filters = common
            .iter()
            .chain(extra)
            .map(|(field, value)| {
                Filter::builder()
                    .r#type(FilterType::TermMatch)
                    .field(*field)
                    .value(*value)
                    .build()
                    .expect("a filter with a type, field and value builds")
            })
            .collect();
        let mut pages = self
            .client
            .get_products()
            .service_code("AmazonEC2")
            .format_version("aws_v1")
            .set_filters(Some(filters))
            .max_results(100)
            .into_paginator()
            .send();
        let mut prices = Prices::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| PricingError::GetProducts(super::sdk_errors::describe(&e)))?;
            let (priced, unpriced) =
                price_list::prices(page.price_list().iter().map(String::as_str));
            for reason in unpriced {
                debug!(%reason, "a Price List product gave no price");
            }
            prices.extend(priced);
        }
        Ok(prices)
    }
}

/// The prices a region is planned with, and where they came from.
#[derive(Debug)]
pub struct RegionPrices {
    pub prices: Prices,
    pub origin: PriceOrigin,
}

/// The on-demand prices of the controller's region, as they stand: a catalog read takes them
/// as they are, and reads again once they change.
pub struct OnDemandPrices {
    region: String,
    fallback: Prices,
    current: RwLock<Arc<RegionPrices>>,
}

impl OnDemandPrices {
    /// `region`'s fallback prices until the Price List answers; logs which fallback that is.
    pub fn new(region: &str) -> Self {
        let (fallback, origin) = tables::fallback(region);
        match &origin {
            PriceOrigin::StandIn(stand_in) => info!(
                region,
                stand_in,
                "no bundled on-demand price table for this region: until the AWS Price List answers, types are priced from the stand-in region's table"
            ),
            _ => info!(
                region,
                "on-demand prices from the bundled table until the AWS Price List answers"
            ),
        }
        let current = RwLock::new(Arc::new(RegionPrices {
            prices: fallback.clone(),
            origin,
        }));
        Self {
            region: region.to_owned(),
            fallback,
            current,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The prices as they stand; the same `Arc` until they change.
    pub fn current(&self) -> Arc<RegionPrices> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the Price List's answer, over the fallback.
    pub fn answered(&self, live: Prices) {
        let priced = RegionPrices {
            prices: tables::with_live(self.fallback.clone(), live),
            origin: PriceOrigin::Live,
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(priced);
    }

    /// Reads the Price List now and then every `REFRESH` (`RETRY` after a failure) until
    /// shutdown; a failure keeps the prices as they were.
    pub async fn keep_fresh(self: Arc<Self>, price_list: PriceList, shutdown: CancellationToken) {
        loop {
            let wait = match price_list.on_demand_prices().await {
                Ok(live) => {
                    info!(
                        region = price_list.region(),
                        types = live.len(),
                        "read on-demand prices from the AWS Price List"
                    );
                    self.answered(live);
                    REFRESH
                }
                Err(error) => {
                    warn!(%error, region = price_list.region(), retry_in_s = RETRY.as_secs(), "reading the AWS Price List failed; keeping the prices as they were (set --isolated-vpc where the cluster has no route to it)");
                    RETRY
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_price_list_endpoint_serves_the_region() {
        assert_eq!(price_list_region("us-east-1"), Some("us-east-1"));
        assert_eq!(price_list_region("us-west-2"), Some("us-east-1"));
        assert_eq!(price_list_region("sa-east-1"), Some("us-east-1"));
        assert_eq!(price_list_region("eu-west-1"), Some("eu-central-1"));
        assert_eq!(price_list_region("ap-northeast-1"), Some("ap-south-1"));
        for region in [
            "",
            "us-gov-west-1",
            "cn-north-1",
            "us-iso-east-1",
            "us-isob-east-1",
        ] {
            assert_eq!(price_list_region(region), None, "{region}");
        }
    }

    #[test]
    fn prices_change_once_the_price_list_answers() {
        let prices = OnDemandPrices::new("eu-west-1");
        let before = prices.current();
        assert_eq!(before.origin, PriceOrigin::StandIn("us-east-1"));
        assert!(
            Arc::ptr_eq(&before, &prices.current()),
            "unchanged prices are the same Arc"
        );
        prices.answered(Prices::from([("m5.large".into(), 0.107)]));
        let after = prices.current();
        assert!(!Arc::ptr_eq(&before, &after));
        assert_eq!(after.origin, PriceOrigin::Live);
        assert_eq!(after.prices["m5.large"], 0.107);
        assert_eq!(
            after.prices["c5.large"], 0.085,
            "the fallback fills the gaps"
        );
    }

    #[tokio::test]
    async fn an_unreachable_price_list_fails_fast_and_keeps_the_fallback() {
        // Nothing listens on port 9 of the loopback address: the connection is refused at once.
        let config = SdkConfig::builder()
            .endpoint_url("http://127.0.0.1:9")
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("AKID", "secret", None, None, "test"),
                ),
            )
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let price_list = PriceList::new(&config, "eu-west-1").unwrap();
        let started = std::time::Instant::now();
        let error = price_list.on_demand_prices().await.unwrap_err();
        assert!(matches!(error, PricingError::GetProducts(_)), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
