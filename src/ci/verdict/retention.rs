//! The routes part of the report: which route and upstream each new series takes, by the
//! route splitter's own `claim` and per-route relabeling.

use std::collections::BTreeMap;

use super::{metric, reached_guard};
use crate::ci::report::{Hop, Retention};
use crate::ci::stages::Staged;

/// Which routes and upstreams the new series take, grouped by metric and path.
pub(super) fn retention(
    routing: &crate::route::Routing,
    staged: &[Staged],
    added: &[usize],
) -> Vec<Retention> {
    use crate::route::split::{claim, route_relabel, SOLE_UPSTREAM};
    let mut claimed = Vec::new();
    let mut scratch = crate::relabel::Scratch::default();
    let mut groups: BTreeMap<(String, Vec<Hop>), u64> = BTreeMap::new();
    for &i in added {
        let s = &staged[i];
        // Budget drops included: the budget finding says they are over; this says where
        // they would go once admitted.
        if !reached_guard(&s.fate) {
            continue;
        }
        let labels = s.labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let mut hops = Vec::new();
        if claim(routing, labels.clone(), None, &mut claimed) {
            let mut routes: Vec<usize> = claimed.iter().flatten().copied().collect();
            routes.sort();
            routes.dedup();
            for r in routes {
                let route = routing.routes.get(r);
                let upstreams = claimed
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == Some(r))
                    .map(|(u, _)| routing.upstreams[u].name.clone())
                    .collect();
                let dropped = route_relabel(route, labels.clone(), &mut scratch).is_none();
                hops.push(Hop {
                    route: match route {
                        Some(rt) => rt.name.clone(),
                        None if r == SOLE_UPSTREAM => {
                            "(no route matched: the only upstream)".into()
                        }
                        None => String::new(),
                    },
                    upstreams,
                    min_interval: route
                        .and_then(|rt| rt.min_interval)
                        .map(|d| crate::duration::PromDuration(d).to_string()),
                    dropped_by_route_relabel: dropped,
                });
            }
        }
        *groups
            .entry((metric(&s.labels).to_string(), hops))
            .or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((metric, routes), series)| Retention {
            metric,
            series,
            routes,
        })
        .collect()
}
