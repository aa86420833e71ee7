//! How a [`Snapshot`] looks: the same cells drawn as ratatui tables on a terminal, or printed
//! as plain aligned lines when stdout is not one. Pure: no terminal, no cluster.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::snapshot::{Decision, NodePoolRow, Scale, Snapshot, Usage, WorkloadKind, WorkloadRow};

/// Where `$/HOUR` comes from; NodeClaims record no price, so the bundled list prices stand in.
pub const PRICE_SOURCE: &str = "$/HOUR: on-demand list prices from the bundled us-east-1 table, \
     by each Node's node.kubernetes.io/instance-type (spot nodes at that price too)";

const WORKLOAD_HEADER: [&str; 6] = [
    "SCALER",
    "KIND",
    "QUEUE",
    "TARGET",
    "REPLICAS/JOBS",
    "LAST DECISION",
];
const NODE_POOL_HEADER: [&str; 6] = ["NODEPOOL", "NODES", "IN-FLIGHT", "CPU", "MEMORY", "$/HOUR"];

/// Draws the whole screen: scalers on top, NodePools below, the price source and keys last.
pub fn render(frame: &mut Frame, snapshot: &Snapshot) {
    let workloads: Vec<[String; 6]> = snapshot.workloads.iter().map(workload_cells).collect();
    let node_pools: Vec<[String; 6]> = snapshot.node_pools.iter().map(node_pool_cells).collect();
    // Each table's height: its rows, a header and two borders; the scalers take what is left.
    let pools_height = u16::try_from(node_pools.len().max(1) + 3).unwrap_or(u16::MAX);
    let [scalers_area, pools_area, footer_area] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(pools_height),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    frame.render_widget(
        table(&WORKLOAD_HEADER, &workloads, "ScaledObjects and ScaledJobs"),
        scalers_area,
    );
    frame.render_widget(
        table(&NODE_POOL_HEADER, &node_pools, "NodePools"),
        pools_area,
    );
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(PRICE_SOURCE),
            Line::from("q or Ctrl-C quits"),
        ]),
        footer_area,
    );
}

fn table<'a>(header: &[&'a str; 6], rows: &[[String; 6]], title: &'a str) -> Table<'a> {
    let widths = column_widths(header, rows)
        .map(|width| Constraint::Length(u16::try_from(width).unwrap_or(u16::MAX)));
    let mut widths = widths.to_vec();
    // The last column (a message or a price) takes whatever room is left.
    if let Some(last) = widths.last_mut() {
        *last = Constraint::Fill(1);
    }
    Table::new(rows.iter().map(|cells| Row::new(cells.clone())), widths)
        .header(Row::new(header.to_vec()).style(Style::new().add_modifier(Modifier::BOLD)))
        .column_spacing(2)
        .block(Block::bordered().title(title))
}

/// The snapshot as plain text: both tables with aligned columns, then the price source.
pub fn plain(snapshot: &Snapshot) -> String {
    let workloads: Vec<[String; 6]> = snapshot.workloads.iter().map(workload_cells).collect();
    let node_pools: Vec<[String; 6]> = snapshot.node_pools.iter().map(node_pool_cells).collect();
    let mut text = plain_table(&WORKLOAD_HEADER, &workloads);
    text.push('\n');
    text.push_str(&plain_table(&NODE_POOL_HEADER, &node_pools));
    text.push('\n');
    text.push_str(PRICE_SOURCE);
    text.push('\n');
    text
}

fn plain_table(header: &[&str; 6], rows: &[[String; 6]]) -> String {
    let widths = column_widths(header, rows);
    let line = |cells: [&str; 6]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(*header);
    for row in rows {
        text.push_str(&line(row.each_ref().map(String::as_str)));
    }
    text
}

fn column_widths(header: &[&str; 6], rows: &[[String; 6]]) -> [usize; 6] {
    std::array::from_fn(|column| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain([header[column].len()])
            .max()
            .unwrap_or(0)
    })
}

fn workload_cells(row: &WorkloadRow) -> [String; 6] {
    let kind = match row.kind {
        WorkloadKind::ScaledObject => "ScaledObject",
        WorkloadKind::ScaledJob => "ScaledJob",
    };
    let (queue, target) = match row.queue {
        Some(reading) => (number(reading.value), number(reading.target)),
        None => ("-".to_owned(), "-".to_owned()),
    };
    let scale = match row.scale {
        Scale::Replicas { current, desired } => format!(
            "{}/{} replicas",
            current.map_or("-".to_owned(), |n| n.to_string()),
            desired.map_or("-".to_owned(), |n| n.to_string())
        ),
        Scale::Jobs { running, pending } => format!("{running} running, {pending} pending"),
    };
    let decision = match &row.decision {
        Decision::Waiting => "no status yet".to_owned(),
        Decision::Failing(message) => format!("failing: {message}"),
        Decision::Paused => "paused".to_owned(),
        Decision::Polling {
            scaled_seconds_ago: None,
        } => "polling, not scaled yet".to_owned(),
        Decision::Polling {
            scaled_seconds_ago: Some(seconds),
        } => format!("polling, scaled {} ago", age(*seconds)),
    };
    [
        format!("{}/{}", row.namespace, row.name),
        kind.to_owned(),
        queue,
        target,
        scale,
        decision,
    ]
}

fn node_pool_cells(row: &NodePoolRow) -> [String; 6] {
    let mut price = format!("${:.3}", row.dollars_per_hour);
    if row.unpriced_nodes > 0 {
        price.push_str(&format!(" (+{} unpriced)", row.unpriced_nodes));
    }
    [
        row.name.clone(),
        row.nodes.to_string(),
        row.in_flight.to_string(),
        usage(row.cpu, |millicores| number(millicores as f64 / 1000.0)),
        usage(row.memory, |bytes| {
            format!("{}Gi", number(bytes as f64 / f64::from(1u32 << 30)))
        }),
        price,
    ]
}

/// `used/limit`, or `used/-` without a limit.
fn usage(usage: Usage, unit: impl Fn(i64) -> String) -> String {
    format!(
        "{}/{}",
        unit(usage.used),
        usage.limit.map_or("-".to_owned(), unit)
    )
}

/// A whole number as such, anything else to one decimal.
fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// `45s`, `3m`, `2h`, `4d`: the largest whole unit.
fn age(seconds: i64) -> String {
    match seconds {
        ..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::triggers::TriggerValue;
    use crate::top::snapshot::Usage;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn snapshot() -> Snapshot {
        Snapshot {
            workloads: vec![
                WorkloadRow {
                    kind: WorkloadKind::ScaledJob,
                    namespace: "etl".into(),
                    name: "batch".into(),
                    queue: Some(TriggerValue {
                        value: 12.0,
                        target: 2.0,
                    }),
                    scale: Scale::Jobs {
                        running: 6,
                        pending: 2,
                    },
                    decision: Decision::Polling {
                        scaled_seconds_ago: Some(150),
                    },
                },
                WorkloadRow {
                    kind: WorkloadKind::ScaledObject,
                    namespace: "shop".into(),
                    name: "web".into(),
                    queue: None,
                    scale: Scale::Replicas {
                        current: Some(1),
                        desired: Some(3),
                    },
                    decision: Decision::Failing("aws-sqs-queue: access denied".into()),
                },
            ],
            node_pools: vec![NodePoolRow {
                name: "general".into(),
                nodes: 2,
                in_flight: 1,
                cpu: Usage {
                    used: 3500,
                    limit: Some(16000),
                },
                memory: Usage {
                    used: 8 << 30,
                    limit: None,
                },
                dollars_per_hour: 0.192,
                unpriced_nodes: 0,
            }],
        }
    }

    fn screen(snapshot: &Snapshot, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| render(frame, snapshot)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn line_with<'a>(screen: &'a [String], text: &str) -> &'a str {
        screen
            .iter()
            .find(|line| line.contains(text))
            .unwrap_or_else(|| panic!("no line shows {text:?}:\n{}", screen.join("\n")))
    }

    /// The words of a line, the table borders left out.
    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace()
            .map(|word| word.trim_matches('│'))
            .filter(|word| !word.is_empty())
            .collect()
    }

    #[test]
    fn screen_shows_each_scaler_and_node_pool_on_its_own_line() {
        let screen = screen(&snapshot(), 120, 20);
        assert_eq!(
            words(line_with(&screen, "etl/batch")),
            [
                "etl/batch",
                "ScaledJob",
                "12",
                "2",
                "6",
                "running,",
                "2",
                "pending",
                "polling,",
                "scaled",
                "2m",
                "ago"
            ]
        );
        assert_eq!(
            words(line_with(&screen, "shop/web")),
            [
                "shop/web",
                "ScaledObject",
                "-",
                "-",
                "1/3",
                "replicas",
                "failing:",
                "aws-sqs-queue:",
                "access",
                "denied"
            ]
        );
        assert_eq!(
            words(line_with(&screen, "general")),
            ["general", "2", "1", "3.5/16", "8Gi/-", "$0.192"]
        );
        line_with(&screen, "SCALER");
        line_with(&screen, "NODEPOOL");
        line_with(&screen, "on-demand list prices");
        line_with(&screen, "q or Ctrl-C quits");
    }

    #[test]
    fn an_empty_cluster_still_draws_both_tables() {
        let screen = screen(&Snapshot::default(), 80, 12);
        line_with(&screen, "ScaledObjects and ScaledJobs");
        line_with(&screen, "NodePools");
        line_with(&screen, "IN-FLIGHT");
    }

    #[test]
    fn plain_text_aligns_columns_under_their_headers() {
        let text = plain(&snapshot());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SCALER     KIND          QUEUE  TARGET  REPLICAS/JOBS         LAST DECISION"
        );
        assert_eq!(
            lines[1],
            "etl/batch  ScaledJob     12     2       6 running, 2 pending  polling, scaled 2m ago"
        );
        assert_eq!(
            lines[2],
            "shop/web   ScaledObject  -      -       1/3 replicas          failing: aws-sqs-queue: access denied"
        );
        assert_eq!(lines[3], "");
        assert_eq!(
            lines[4],
            "NODEPOOL  NODES  IN-FLIGHT  CPU     MEMORY  $/HOUR"
        );
        assert_eq!(
            lines[5],
            "general   2      1          3.5/16  8Gi/-   $0.192"
        );
        assert_eq!(lines[7], PRICE_SOURCE);
    }

    #[test]
    fn unpriced_nodes_are_counted_beside_the_price() {
        let mut snapshot = snapshot();
        snapshot.node_pools[0].unpriced_nodes = 2;
        assert_eq!(
            node_pool_cells(&snapshot.node_pools[0])[5],
            "$0.192 (+2 unpriced)"
        );
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(
            [0, 59, 60, 3599, 3600, 90000].map(age),
            ["0s", "59s", "1m", "59m", "1h", "1d"]
        );
    }
}
