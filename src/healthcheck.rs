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
    let agent = crate::outbound::local_agent(Duration::from_secs(3));
    let answer = crate::outbound::get(&agent, url, &[]).map_err(|e| e.to_string())?;
    if answer.status == 200 {
        return Ok(());
    }
    Err(format!("HTTP {} {}", answer.status, answer.body.trim()))
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
