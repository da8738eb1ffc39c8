//! Reading a role's Prometheus `/metrics` page (plain HTTP/1.0, no client
//! library needed) and summing a counter family from it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::error::CliError;

/// A `/metrics` endpoint: `host:port` and path.
#[derive(Debug, Clone)]
pub struct MetricsUrl {
    authority: String,
    path: String,
}

impl MetricsUrl {
    /// Parses `http://host:port[/path]` (path defaults to `/metrics`).
    pub fn parse(url: &str) -> Result<Self, CliError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("metrics URL {url:?}: only http:// is supported"))?;
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) if !p.is_empty() => (a, format!("/{p}")),
            Some((a, _)) => (a, "/metrics".to_owned()),
            None => (rest, "/metrics".to_owned()),
        };
        if authority.is_empty() {
            return Err(format!("metrics URL {url:?}: no host").into());
        }
        Ok(Self {
            authority: authority.to_owned(),
            path,
        })
    }

    /// `/metrics` on a socket address.
    pub fn of(addr: std::net::SocketAddr) -> Self {
        Self {
            authority: addr.to_string(),
            path: "/metrics".into(),
        }
    }

    /// Fetches the page.
    pub async fn fetch(&self) -> Result<String, CliError> {
        let io = async {
            let mut stream = tokio::net::TcpStream::connect(&self.authority).await?;
            let request = format!(
                "GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.path, self.authority
            );
            stream.write_all(request.as_bytes()).await?;
            let mut body = String::new();
            stream.read_to_string(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), io)
            .await
            .map_err(|_| format!("metrics at {} timed out", self.authority))?
            .map_err(|e| format!("metrics at {}: {e}", self.authority))?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("metrics at {}: no HTTP response", self.authority))?;
        if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|c| c != "200")
        {
            return Err(format!(
                "metrics at {}: {}",
                self.authority,
                head.lines().next().unwrap_or_default()
            )
            .into());
        }
        Ok(body.to_owned())
    }

    /// The sum of the series of `family` whose labels contain every one of
    /// `labels` (`name="value"` pairs).
    pub async fn sum(&self, family: &str, labels: &[(&str, &str)]) -> Result<f64, CliError> {
        Ok(sum(&self.fetch().await?, family, labels))
    }
}

/// The sum of `family`'s series matching `labels` in a Prometheus text page.
pub fn sum(page: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, label_set) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if name != family {
                return None;
            }
            let set: Vec<&str> = label_set.split(',').collect();
            wanted
                .iter()
                .all(|w| set.contains(&w.as_str()))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_summed_by_label() {
        let page = "# HELP pxeconf_lookups Legacy look-ups\n# TYPE pxeconf_lookups counter\n\
                    pxeconf_lookups_total{rpc=\"GetHost\"} 3\n\
                    pxeconf_lookups_total{rpc=\"GetModules\"} 4\n\
                    pxeconf_config_writes_total{depot=\"d1\",result=\"ok\"} 10\n\
                    pxeconf_config_writes_total{depot=\"d2\",result=\"ok\"} 5\n\
                    pxeconf_config_writes_total{depot=\"d1\",result=\"error\"} 1\n";
        assert_eq!(sum(page, "pxeconf_lookups_total", &[]), 7.0);
        assert_eq!(
            sum(page, "pxeconf_config_writes_total", &[("result", "ok")]),
            15.0
        );
        assert_eq!(
            sum(
                page,
                "pxeconf_config_writes_total",
                &[("depot", "d1"), ("result", "ok")]
            ),
            10.0
        );
        assert_eq!(sum(page, "pxeconf_missing_total", &[]), 0.0);
    }

    #[test]
    fn urls_default_to_the_metrics_path() {
        let u = MetricsUrl::parse("http://127.0.0.1:9100").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:9100", "/metrics")
        );
        let u = MetricsUrl::parse("http://h:1/x/metrics").unwrap();
        assert_eq!(u.path, "/x/metrics");
        assert!(MetricsUrl::parse("https://h:1").is_err());
    }
}
