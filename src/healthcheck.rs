//! `rollbackd healthcheck`: asks the server on this machine whether it is up (or ready), for a
//! container's HEALTHCHECK in an image that has no curl.

use std::net::SocketAddr;
use std::time::Duration;

/// The address to ask for a server listening on `listen`: an unspecified address (`0.0.0.0`,
/// `[::]`) is asked on loopback.
pub fn loopback_for(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() && a.is_ipv4() => format!("127.0.0.1:{}", a.port()),
        Ok(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        _ => listen.to_string(),
    }
}

/// `Ok` when `url` answers 200 within three seconds; otherwise what it answered, or why not.
/// Never through a proxy: the server is on this machine.
pub fn probe(url: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    let body = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    Err(format!("HTTP {status} {}", body.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        assert_eq!(loopback_for("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(loopback_for("[::]:8080"), "[::1]:8080");
        assert_eq!(loopback_for("10.0.0.5:8080"), "10.0.0.5:8080");
        assert_eq!(loopback_for("localhost:8080"), "localhost:8080");
    }
}
