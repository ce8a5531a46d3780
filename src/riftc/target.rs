//! Where riftc connects: `HOST[:PORT]`, with IPv6 literals in brackets
//! (`[::1]:5050`) and 5050 when no port is given; or several of them,
//! separated by commas, for the nodes of one cluster (tried in turn).

use std::fmt;

/// riftd's default port.
pub const DEFAULT_PORT: u16 = 5050;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A name or an IP literal, without brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6
    /// literal (`::1`, which has no room for a port).
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not HOST[:PORT] (IPv6 as [::1]:5050)");
        if text.is_empty() {
            return Err(bad());
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if text.matches(':').count() > 1 {
            (text, None)
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(bad)?,
        };
        Ok(Target {
            host: host.to_owned(),
            port,
        })
    }
}

/// Parses the SERVER argument: one `HOST[:PORT]`, or several separated by
/// commas (`node-a:5050,node-b:5051`, the nodes of one cluster). Never
/// empty; an empty item or a server listed twice is refused.
pub fn parse_list(text: &str) -> Result<Vec<Target>, String> {
    let mut targets: Vec<Target> = Vec::new();
    for item in text.split(',') {
        if item.trim().is_empty() && text.contains(',') {
            return Err(format!(
                "{:?} has an empty server: HOST[:PORT],HOST[:PORT]",
                text.trim()
            ));
        }
        let target = Target::parse(item)?;
        if targets.contains(&target) {
            return Err(format!("{:?} lists {target} twice", text.trim()));
        }
        targets.push(target);
    }
    Ok(targets)
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn hosts_ports_and_ipv6_literals() {
        for (text, expected) in [
            ("127.0.0.1", target("127.0.0.1", 5050)),
            ("127.0.0.1:6000", target("127.0.0.1", 6000)),
            ("chat.example.org", target("chat.example.org", 5050)),
            ("chat.example.org:7", target("chat.example.org", 7)),
            ("[::1]:5051", target("::1", 5051)),
            ("[::1]", target("::1", 5050)),
            ("::1", target("::1", 5050)),
            (" localhost ", target("localhost", 5050)),
        ] {
            assert_eq!(Target::parse(text), Ok(expected.clone()), "{text}");
            let shown = expected.to_string();
            assert_eq!(Target::parse(&shown), Ok(expected), "{shown}");
        }
    }

    #[test]
    fn a_comma_separated_list_names_the_nodes_in_order() {
        assert_eq!(
            parse_list("node-a:5050,node-b:5051"),
            Ok(vec![target("node-a", 5050), target("node-b", 5051)])
        );
        assert_eq!(
            parse_list(" [::1]:5050 , ::2,localhost "),
            Ok(vec![
                target("::1", 5050),
                target("::2", 5050),
                target("localhost", 5050)
            ])
        );
        // One server is a list of one, parsed as before.
        assert_eq!(
            parse_list("127.0.0.1:6000"),
            Ok(vec![target("127.0.0.1", 6000)])
        );
    }

    #[test]
    fn a_list_with_an_empty_bad_or_repeated_server_is_refused() {
        for (text, expected) in [
            ("a:1,", "empty server"),
            (",a:1", "empty server"),
            ("a:1,,b:2", "empty server"),
            ("a:1, ,b:2", "empty server"),
            ("a:1,b:0", "HOST[:PORT]"),
            ("a:1,b:2,a:1", "lists a:1 twice"),
            ("a,a:5050", "lists a:5050 twice"),
            ("", "HOST[:PORT]"),
        ] {
            let error = parse_list(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_the_expected_form() {
        for text in [
            "",
            ":5050",
            "host:",
            "host:0",
            "host:70000",
            "[::1",
            "[::1]x",
            "a b",
        ] {
            let error = Target::parse(text).unwrap_err();
            assert!(error.contains("HOST[:PORT]"), "{text}: {error}");
        }
    }
}
