//! Reading the proxy's `/metrics` (Prometheus text exposition), which `local --compare` and
//! `cluster` both count from: a counter summed over its label sets.

/// Sum of every sample of counter `name` in a Prometheus text exposition (0 if absent).
pub(crate) fn sum_counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labels) => &labels[labels.find('}')? + 1..],
                None if rest.starts_with(char::is_whitespace) => rest,
                None => return None, // another metric with this name as a prefix
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(0.0, |sum, v| sum + v) // `.sum()` of nothing is -0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECTS: &str = "sigsci_proxy_upstream_connects_total";

    #[test]
    fn upstream_connects_sum_every_result_label() {
        let text = "# HELP sigsci_proxy_upstream_connects_total New upstream connections\n\
                    # TYPE sigsci_proxy_upstream_connects_total counter\n\
                    sigsci_proxy_upstream_connects_total{result=\"ok\"} 2\n\
                    sigsci_proxy_upstream_connects_total{result=\"error\"} 3\n\
                    sigsci_proxy_upstream_connects_total_other 100\n\
                    sigsci_proxy_rpcs_total{method=\"x\"} 7\n";
        assert_eq!(sum_counter(text, CONNECTS), 5.0);
        assert_eq!(
            sum_counter("sigsci_proxy_upstream_connects_total 4\n", CONNECTS),
            4.0
        );
        let absent = sum_counter("", CONNECTS);
        assert!(
            absent == 0.0 && absent.is_sign_positive(),
            "absent counts as 0, printed as 0 (not -0): {absent}"
        );
    }
}
