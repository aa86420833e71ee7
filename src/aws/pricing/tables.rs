//! The bundled on-demand price tables, one per region (`data/<region>.tsv`, see the README
//! there), their text format, and which table a region falls back to while the live Price
//! List has not answered. Pure: no I/O.

use std::collections::{BTreeMap, HashMap};

/// Instance type → USD per hour, on demand, Linux, shared tenancy.
pub type Prices = HashMap<String, f64>;

/// The region whose table stands in for a region that has none: most types are sold there,
/// and its prices rank types the way other regions' prices mostly do.
pub const STAND_IN_REGION: &str = "us-east-1";

const BUNDLED: &[(&str, &str)] = &[
    ("us-east-1", include_str!("data/us-east-1.tsv")),
    ("us-gov-east-1", include_str!("data/us-gov-east-1.tsv")),
    ("us-gov-west-1", include_str!("data/us-gov-west-1.tsv")),
];

/// A line of a price table that is not `type<TAB>price` with a positive price.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {problem}")]
pub struct TableError {
    pub line: usize,
    pub problem: LineProblem,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LineProblem {
    #[error("expected an instance type, a tab and a price")]
    NotTwoColumns,
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("the price {0} is not positive")]
    NotPositive(f64),
    #[error("{0} is listed twice")]
    Duplicate(String),
}

/// Parses a table: one `type<TAB>price` line per instance type, USD per hour.
pub fn parse_table(text: &str) -> Result<Prices, TableError> {
    let mut prices = Prices::new();
    for (index, row) in text.lines().enumerate() {
        let line = index + 1;
        let fail = |problem| TableError { line, problem };
        let (name, price) = row
            .split_once('\t')
            .filter(|(name, price)| !name.is_empty() && !price.contains('\t'))
            .ok_or_else(|| fail(LineProblem::NotTwoColumns))?;
        let price: f64 = price
            .parse()
            .map_err(|_| fail(LineProblem::NotANumber(price.to_owned())))?;
        if !(price.is_finite() && price > 0.0) {
            return Err(fail(LineProblem::NotPositive(price)));
        }
        if prices.insert(name.to_owned(), price).is_some() {
            return Err(fail(LineProblem::Duplicate(name.to_owned())));
        }
    }
    Ok(prices)
}

/// Writes `prices` in the bundled format, sorted by instance type, so a refreshed table
/// diffs line by line against the one it replaces.
pub fn format_table(prices: &Prices) -> String {
    let sorted: BTreeMap<_, _> = prices.iter().collect();
    sorted
        .into_iter()
        .map(|(name, price)| format!("{name}\t{price}\n"))
        .collect()
}

/// The regions with a bundled table.
pub fn bundled_regions() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|(region, _)| *region)
}

/// The bundled table of `region`, if there is one.
pub fn bundled(region: &str) -> Option<Prices> {
    BUNDLED
        .iter()
        .find(|(bundled, _)| *bundled == region)
        .map(|(region, text)| {
            parse_table(text)
                .unwrap_or_else(|e| panic!("the bundled {region} price table parses: {e}"))
        })
}

/// Where the prices a region is planned with came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PriceOrigin {
    /// The AWS Price List answered for the region.
    Live,
    /// The region's own bundled table.
    Bundled,
    /// The bundled table of another region (`STAND_IN_REGION`): the region has none.
    StandIn(&'static str),
}

/// The prices `region` is planned with before, or without, the live Price List.
pub fn fallback(region: &str) -> (Prices, PriceOrigin) {
    match bundled(region) {
        Some(prices) => (prices, PriceOrigin::Bundled),
        None => (
            bundled(STAND_IN_REGION).expect("the stand-in region has a table"),
            PriceOrigin::StandIn(STAND_IN_REGION),
        ),
    }
}

/// The live prices over the fallback: a type the Price List did not price keeps its
/// fallback price.
pub fn with_live(mut fallback: Prices, live: Prices) -> Prices {
    fallback.extend(live);
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_table_parses_with_positive_prices() {
        let mut checked = 0;
        for region in bundled_regions() {
            let prices = bundled(region).unwrap();
            assert!(prices.len() >= 500, "{region}: {} types", prices.len());
            assert!(prices.values().all(|p| *p > 0.0), "{region}");
            checked += 1;
        }
        assert!(checked >= 3);
    }

    #[test]
    fn bundled_tables_hold_the_published_prices() {
        // AWS's on-demand Linux prices, USD per hour.
        let published = [
            ("us-east-1", "m5.large", 0.096),
            ("us-east-1", "c5.large", 0.085),
            ("us-east-1", "t3.medium", 0.0416),
            ("us-east-1", "m7g.large", 0.0816),
            ("us-east-1", "r6i.2xlarge", 0.504),
            ("us-gov-west-1", "m5.large", 0.121),
            ("us-gov-east-1", "c5.large", 0.102),
        ];
        for (region, name, price) in published {
            assert_eq!(
                bundled(region).unwrap().get(name),
                Some(&price),
                "{region} {name}"
            );
        }
    }

    #[test]
    fn bundled_tables_cover_more_than_the_simulation_catalog() {
        let prices = bundled("us-east-1").unwrap();
        for name in [
            "m5.metal",
            "g5.xlarge",
            "p4d.24xlarge",
            "t4g.nano",
            "x2iedn.xlarge",
        ] {
            assert!(prices.contains_key(name), "{name}");
        }
    }

    #[test]
    fn a_region_without_a_table_falls_back_to_the_stand_in() {
        let (prices, origin) = fallback("eu-west-1");
        assert_eq!(origin, PriceOrigin::StandIn("us-east-1"));
        assert_eq!(prices.get("m5.large"), Some(&0.096));
        let (prices, origin) = fallback("us-gov-west-1");
        assert_eq!(origin, PriceOrigin::Bundled);
        assert_eq!(prices.get("m5.large"), Some(&0.121));
    }

    #[test]
    fn live_prices_win_and_the_fallback_fills_the_gaps() {
        let fallback = Prices::from([("m5.large".into(), 0.096), ("m5.xlarge".into(), 0.192)]);
        let live = Prices::from([("m5.large".into(), 0.107), ("m8g.large".into(), 0.09)]);
        let merged = with_live(fallback, live);
        assert_eq!(merged["m5.large"], 0.107);
        assert_eq!(merged["m5.xlarge"], 0.192);
        assert_eq!(merged["m8g.large"], 0.09);
    }

    #[test]
    fn a_table_round_trips_through_its_text() {
        let prices = Prices::from([
            ("m5.large".into(), 0.096),
            ("c5.large".into(), 0.085),
            ("u-6tb1.112xlarge".into(), 54.6),
        ]);
        let text = format_table(&prices);
        assert_eq!(
            text,
            "c5.large\t0.085\nm5.large\t0.096\nu-6tb1.112xlarge\t54.6\n"
        );
        assert_eq!(parse_table(&text), Ok(prices));
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let cases = [
            ("m5.large 0.096\n", LineProblem::NotTwoColumns),
            ("m5.large\t0.096\t1\n", LineProblem::NotTwoColumns),
            ("\t0.096\n", LineProblem::NotTwoColumns),
            ("m5.large\tcheap\n", LineProblem::NotANumber("cheap".into())),
            ("m5.large\t0\n", LineProblem::NotPositive(0.0)),
            ("m5.large\t-1\n", LineProblem::NotPositive(-1.0)),
        ];
        for (text, problem) in cases {
            let text = format!("c5.large\t0.085\n{text}");
            assert_eq!(
                parse_table(&text),
                Err(TableError { line: 2, problem }),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_table("c5.large\t0.085\nc5.large\t0.09\n"),
            Err(TableError {
                line: 2,
                problem: LineProblem::Duplicate("c5.large".into())
            })
        );
        assert!(matches!(
            parse_table("m5.large\tNaN\n"),
            Err(TableError { problem: LineProblem::NotPositive(p), .. }) if p.is_nan()
        ));
    }
}
