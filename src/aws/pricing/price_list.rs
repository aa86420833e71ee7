//! Reading the AWS Price List's product documents: each `GetProducts` answer carries one JSON
//! document per product (a string, not an object), and an EC2 instance product names its type
//! under `product.attributes.instanceType` and its on-demand price under
//! `terms.OnDemand.<offer>.priceDimensions.<dimension>.pricePerUnit.USD`. Pure: no I/O.

use std::collections::HashMap;

use serde::Deserialize;

use super::tables::Prices;

#[derive(Deserialize)]
struct Product {
    product: ProductFacts,
    #[serde(default)]
    terms: Terms,
}

#[derive(Deserialize)]
struct ProductFacts {
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attributes {
    instance_type: Option<String>,
}

#[derive(Default, Deserialize)]
struct Terms {
    #[serde(rename = "OnDemand", default)]
    on_demand: HashMap<String, Offer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Offer {
    #[serde(default)]
    price_dimensions: HashMap<String, PriceDimension>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceDimension {
    #[serde(default)]
    price_per_unit: HashMap<String, String>,
}

/// Why a product document gave no price.
#[derive(Debug, thiserror::Error)]
pub enum UnpricedProduct {
    #[error("the product document is not the Price List's JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the product names no instance type")]
    NoInstanceType,
    #[error("{0} has no positive on-demand price in USD")]
    NoUsdPrice(String),
}

/// The instance type a product document prices, and its on-demand USD per hour. A zero price
/// (the Price List lists some capacity that way) counts as none; of several positive prices
/// the lowest is taken, so the answer does not depend on the documents' key order.
pub fn product_price(document: &str) -> Result<(String, f64), UnpricedProduct> {
    let product: Product = serde_json::from_str(document)?;
    let name = product
        .product
        .attributes
        .instance_type
        .filter(|name| !name.is_empty())
        .ok_or(UnpricedProduct::NoInstanceType)?;
    let lowest = product
        .terms
        .on_demand
        .values()
        .flat_map(|offer| offer.price_dimensions.values())
        .filter_map(|dimension| dimension.price_per_unit.get("USD")?.parse::<f64>().ok())
        .filter(|price| price.is_finite() && *price > 0.0)
        .min_by(f64::total_cmp);
    match lowest {
        Some(price) => Ok((name, price)),
        None => Err(UnpricedProduct::NoUsdPrice(name)),
    }
}

/// The prices in a set of product documents, and why the others gave none. A type priced by
/// several documents keeps its lowest price.
pub fn prices<'a>(documents: impl IntoIterator<Item = &'a str>) -> (Prices, Vec<UnpricedProduct>) {
    let mut prices = Prices::new();
    let mut unpriced = Vec::new();
    for document in documents {
        match product_price(document) {
            Ok((name, price)) => {
                prices
                    .entry(name)
                    .and_modify(|known: &mut f64| *known = known.min(price))
                    .or_insert(price);
            }
            Err(reason) => unpriced.push(reason),
        }
    }
    (prices, unpriced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product document shaped as GetProducts returns it for m5.large in eu-west-1.
    fn m5_large_eu_west_1(usd: &str) -> String {
        format!(
            r#"{{
  "product": {{
    "productFamily": "Compute Instance",
    "attributes": {{
      "enhancedNetworkingSupported": "Yes",
      "intelTurboAvailable": "Yes",
      "memory": "8 GiB",
      "dedicatedEbsThroughput": "Up to 2120 Mbps",
      "vcpu": "2",
      "capacitystatus": "Used",
      "locationType": "AWS Region",
      "storage": "EBS only",
      "instanceFamily": "General purpose",
      "operatingSystem": "Linux",
      "regionCode": "eu-west-1",
      "physicalProcessor": "Intel Xeon Platinum 8175",
      "servicename": "Amazon Elastic Compute Cloud",
      "instanceType": "m5.large",
      "tenancy": "Shared",
      "usagetype": "EU-BoxUsage:m5.large",
      "normalizationSizeFactor": "4",
      "preInstalledSw": "NA",
      "location": "EU (Ireland)",
      "servicecode": "AmazonEC2",
      "marketoption": "OnDemand",
      "licenseModel": "No License required",
      "currentGeneration": "Yes",
      "operation": "RunInstances"
    }},
    "sku": "4BMU4JZTRDGZ8F3G"
  }},
  "serviceCode": "AmazonEC2",
  "terms": {{
    "OnDemand": {{
      "4BMU4JZTRDGZ8F3G.JRTCKXETXF": {{
        "priceDimensions": {{
          "4BMU4JZTRDGZ8F3G.JRTCKXETXF.6YS6EN2CT7": {{
            "unit": "Hrs",
            "endRange": "Inf",
            "description": "$0.107 per On Demand Linux m5.large Instance Hour",
            "appliesTo": [],
            "rateCode": "4BMU4JZTRDGZ8F3G.JRTCKXETXF.6YS6EN2CT7",
            "beginRange": "0",
            "pricePerUnit": {{ "USD": "{usd}" }}
          }}
        }},
        "sku": "4BMU4JZTRDGZ8F3G",
        "effectiveDate": "2026-08-01T00:00:00Z",
        "offerTermCode": "JRTCKXETXF",
        "termAttributes": {{}}
      }}
    }}
  }},
  "version": "20260801000000",
  "publicationDate": "2026-08-01T00:00:00Z"
}}"#
        )
    }

    #[test]
    fn a_product_document_gives_its_type_and_hourly_price() {
        let (name, price) = product_price(&m5_large_eu_west_1("0.1070000000")).unwrap();
        assert_eq!(name, "m5.large");
        assert_eq!(price, 0.107);
    }

    #[test]
    fn a_zero_price_is_no_price() {
        let error = product_price(&m5_large_eu_west_1("0.0000000000")).unwrap_err();
        assert!(matches!(error, UnpricedProduct::NoUsdPrice(name) if name == "m5.large"));
    }

    #[test]
    fn a_price_in_another_currency_is_no_price() {
        let document = m5_large_eu_west_1("0.107").replace("\"USD\"", "\"CNY\"");
        let error = product_price(&document).unwrap_err();
        assert!(matches!(error, UnpricedProduct::NoUsdPrice(_)));
    }

    #[test]
    fn an_unreadable_price_is_no_price() {
        let error = product_price(&m5_large_eu_west_1("call us")).unwrap_err();
        assert!(matches!(error, UnpricedProduct::NoUsdPrice(_)));
    }

    #[test]
    fn a_product_without_an_instance_type_is_skipped() {
        let document = m5_large_eu_west_1("0.107").replace("\"instanceType\"", "\"usage\"");
        let error = product_price(&document).unwrap_err();
        assert!(matches!(error, UnpricedProduct::NoInstanceType));
    }

    #[test]
    fn a_product_without_on_demand_terms_has_no_price() {
        let document = r#"{"product": {"attributes": {"instanceType": "m5.large"}}, "terms": {"Reserved": {}}}"#;
        let error = product_price(document).unwrap_err();
        assert!(matches!(error, UnpricedProduct::NoUsdPrice(_)));
    }

    #[test]
    fn a_malformed_document_is_an_error_not_a_panic() {
        for document in [
            "",
            "not json",
            "[]",
            r#"{"product": 3}"#,
            r#"{"terms": {}}"#,
        ] {
            let error = product_price(document).unwrap_err();
            assert!(
                matches!(error, UnpricedProduct::Malformed(_)),
                "{document:?}: {error}"
            );
        }
    }

    #[test]
    fn a_page_keeps_the_priced_products_and_says_why_the_others_are_not() {
        let c5 = m5_large_eu_west_1("0.0970000000").replace("m5.large", "c5.large");
        let cheaper_twin = m5_large_eu_west_1("0.1").replace("JRTCKXETXF\"", "OTHER\"");
        let documents = [
            m5_large_eu_west_1("0.1070000000"),
            c5,
            m5_large_eu_west_1("0.0000000000"),
            "{".to_owned(),
            cheaper_twin,
        ];
        let (prices, unpriced) = prices(documents.iter().map(String::as_str));
        assert_eq!(
            prices,
            Prices::from([("m5.large".into(), 0.1), ("c5.large".into(), 0.097)])
        );
        assert_eq!(unpriced.len(), 2);
    }
}
