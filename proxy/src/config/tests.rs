use std::time::Duration;

use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Result<Config, Vec<Problem>> {
    let mut argv = vec!["sigsci-proxy"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("clap parses");
    // No memory limit, whatever the machine running the tests has: the table's defaults.
    Config::load_within(cli.options, None)
}

#[test]
fn durations_need_units() {
    assert_eq!("20ms".parse::<Dur>().unwrap().0, Duration::from_millis(20));
    assert_eq!(
        "1.5s".parse::<Dur>().unwrap().0,
        Duration::from_millis(1500)
    );
    assert_eq!("0".parse::<Dur>().unwrap().0, Duration::ZERO);
    assert!("20".parse::<Dur>().is_err());
    assert!("fast".parse::<Dur>().is_err());
}

#[test]
fn defaults_with_static_agents() {
    let c = parse(&["--agents", "10.0.0.1:9999,agent-1.agents:9999"]).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:9999".parse().unwrap()]);
    assert_eq!(c.rpc_timeout, Duration::from_millis(80));
    assert_eq!(c.connect_timeout, Duration::from_millis(20));
    assert_eq!(c.upstream_connections, 2);
    assert_eq!(c.agents.len(), 2);
}

#[test]
fn every_problem_is_reported_with_its_option() {
    let problems = parse(&[
        "--rpc-timeout",
        "0ms",
        "--retry-budget",
        "3",
        "--upstream-connections",
        "0",
    ])
    .unwrap_err();
    let options: Vec<_> = problems.iter().map(|p| p.option).collect();
    assert!(options.contains(&"rpc-timeout"), "{problems:?}");
    assert!(options.contains(&"retry-budget"), "{problems:?}");
    assert!(options.contains(&"upstream-connections"), "{problems:?}");
    assert!(options.contains(&"agents"), "{problems:?}");
}

#[test]
fn an_rpc_timeout_longer_than_the_frame_read_timeout_is_refused() {
    let agents = ["--agents", "127.0.0.1:1"];
    let longer = [&agents[..], &["--rpc-timeout", "6s"]].concat();
    let problems = parse(&longer).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.option == "rpc-timeout" && p.message.contains("--frame-read-timeout")),
        "{problems:?}"
    );
    let equal = [&agents[..], &["--rpc-timeout", "5s"]].concat();
    assert!(parse(&equal).is_ok());
}

#[test]
fn flags_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        "rpc-timeout = \"50ms\"\nconnect-timeout = \"10ms\"\nagents = [\"127.0.0.1:1\"]\nlisten = [\"unix:/tmp/x.sock\"]\n",
    )
    .unwrap();
    let c = parse(&["--config", path.to_str().unwrap(), "--rpc-timeout", "60ms"]).unwrap();
    assert_eq!(c.rpc_timeout, Duration::from_millis(60));
    assert_eq!(c.connect_timeout, Duration::from_millis(10));
    assert_eq!(c.listen, vec![ListenAddr::Unix("/tmp/x.sock".into())]);
}

#[test]
fn pool_and_hint_options_reach_the_pool() {
    let c = parse(&[
        "--agents",
        "127.0.0.1:1",
        "--latency-decay",
        "3s",
        "--hints-target-rpc",
        "0",
        "--hints-min-agents",
        "2",
        "--eject-after",
        "3",
    ])
    .unwrap();
    let pool = c.pool_config();
    assert_eq!(pool.latency_decay, Duration::from_secs(3));
    assert_eq!(
        pool.hints.target_rpc_per_agent, None,
        "0 turns the rate hint off"
    );
    assert_eq!(pool.hints.min_agents, 2);
    assert_eq!(pool.ejection.consecutive_failures, 3);
    // The join delay covers the skew a polled membership allows between replicas.
    let join = |args: &[&str]| parse(args).unwrap().pool_config().join_delay;
    assert_eq!(
        join(&["--agents-dns", "agents:9999"]),
        Duration::from_secs(5)
    );
    let file = ["--agents-file", "agents.json", "--agents-file-poll", "2s"];
    assert_eq!(join(&file), Duration::from_secs(2));
    assert_eq!(
        join(&[&file[..], &["--join-delay", "3s"]].concat()),
        Duration::from_secs(3)
    );
    assert_eq!(
        join(&[&file[..], &["--join-delay", "0s"]].concat()),
        Duration::ZERO
    );
    assert_eq!(
        join(&["--agents-k8s", "sigsci/agents"]),
        Duration::from_millis(500)
    );
    let defaults = parse(&["--agents", "127.0.0.1:1"]).unwrap().pool_config();
    assert_eq!(
        defaults,
        PoolConfig::default(),
        "the pool's defaults are the proxy's"
    );
    let problems = parse(&[
        "--agents",
        "127.0.0.1:1",
        "--hints-min-agents",
        "5",
        "--hints-max-agents",
        "4",
        "--hints-target-outstanding",
        "0",
    ])
    .unwrap_err();
    let options: Vec<_> = problems.iter().map(|p| p.option).collect();
    assert_eq!(
        options,
        ["hints-target-outstanding", "hints-min-agents"],
        "{problems:?}"
    );
}

#[test]
fn unknown_file_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, "rpc-timout = \"50ms\"\n").unwrap();
    let problems = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
    assert_eq!(problems[0].option, "config");
    assert!(problems[0].message.contains("rpc-timout"), "{problems:?}");
}

#[test]
fn membership_sources() {
    let c = parse(&["--agents-k8s", "sigsci/agents:rpc"]).unwrap();
    assert_eq!(
        c.membership(),
        Some(Membership::Kubernetes(ServiceRef {
            namespace: "sigsci".into(),
            service: "agents".into(),
            port_name: Some("rpc".into())
        }))
    );
    let p = parse(&["--agents", "a:1", "--agents-dns", "agents:9999"]).unwrap_err();
    assert_eq!(p[0].option, "agents");
    let p = parse(&["--agents", "nohost"]).unwrap_err();
    assert!(p[0].to_string().starts_with("--agents: `nohost`"), "{p:?}");
}

#[test]
fn addresses_and_services_parse_as_agent_pool_parses_them() {
    // The Kubernetes form is agent-pool's ServiceRef: names checked as the API server does.
    let p = parse(&["--agents-k8s", "Sigsci/agents"]).unwrap_err();
    assert_eq!(p[0].option, "agents-k8s");
    assert!(p[0].message.contains("namespace \"Sigsci\""), "{p:?}");
    // A name to resolve is agent-pool's HostPort.
    let c = parse(&["--agents-dns", "agents.sigsci.svc:9999"]).unwrap();
    assert_eq!(
        c.membership(),
        Some(Membership::Dns(HostPort {
            host: "agents.sigsci.svc".into(),
            port: 9999
        }))
    );
    let p = parse(&["--agents-dns", "agents:0"]).unwrap_err();
    assert!(p[0].message.contains("port 0"), "{p:?}");
    // Listeners are agent-pool's Address.
    let c = parse(&[
        "--agents",
        "unix:/run/agent.sock",
        "--listen",
        "[::1]:9999,unix:/run/p.sock",
    ])
    .unwrap();
    assert_eq!(
        c.listen,
        vec![
            agent_pool::Address::Tcp("[::1]:9999".parse().unwrap()),
            agent_pool::Address::Unix("/run/p.sock".into())
        ]
    );
    assert!(Cli::try_parse_from(["sigsci-proxy", "--listen", "unix:"]).is_err());
}

#[test]
fn help_shows_each_default_from_the_table() {
    let mut cmd = Cli::command_with_defaults();
    let help = cmd.render_long_help().to_string();
    for (flag, default) in [
        ("--listen", "0.0.0.0:9999"),
        ("--unix-socket-mode", "0666"),
        ("--idle-timeout", "1m"),
        ("--rpc-timeout", "80ms"),
        ("--busy-poll", "0s"),
        ("--upstream-mode", "mux"),
        ("--hints-target-rpc", "1000"),
    ] {
        let at = help.find(&format!("{flag} <")).expect(flag);
        let next = help[at + 2..]
            .find("\n      --")
            .map_or(help.len(), |n| at + 2 + n);
        assert!(
            help[at..next].contains(&format!("[default: {default}]")),
            "{flag}: {}",
            &help[at..next]
        );
    }
    // Each default shown, given as the flag, leaves the configuration as it was.
    let texts = options::default_texts();
    assert_eq!(texts.len(), 40, "{texts:?}");
    let base = format!("{:?}", parse(&["--agents", "127.0.0.1:1"]).unwrap());
    for (id, text) in &texts {
        let flag = format!("--{}", id.replace('_', "-"));
        let c = parse(&["--agents", "127.0.0.1:1", &flag, text])
            .unwrap_or_else(|e| panic!("{flag} {text}: {e:?}"));
        assert_eq!(format!("{c:?}"), base, "{flag} {text}");
    }
    let drain = cmd
        .find_subcommand_mut("drain")
        .unwrap()
        .render_help()
        .to_string();
    assert!(drain.contains("[default: 127.0.0.1:9090]"), "{drain}");
}

#[test]
fn defaults_are_the_tables() {
    let c = Config::default();
    assert_eq!(c.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.unix_socket_mode, 0o666);
    assert_eq!(c.busy_poll, Duration::ZERO);
    assert_eq!(c.control_socket, None);
    assert_eq!(c.agents_k8s, None);
    assert!(c.agents.is_empty());
    assert_eq!(c.gone_grace, PoolConfig::default().gone_grace);
}

#[test]
fn zero_counts_and_periods_are_refused_by_name() {
    let zeroes = [
        "backlog",
        "max-connections",
        "max-in-flight-per-connection",
        "upstream-connections",
        "max-in-flight",
        "eject-after",
        "connect-timeout",
        "rpc-timeout",
        "idle-timeout",
        "write-timeout",
        "frame-read-timeout",
        "latency-decay",
        "agents-file-poll",
    ];
    let mut args = vec!["--agents".to_owned(), "127.0.0.1:1".to_owned()];
    for option in zeroes {
        args.extend([format!("--{option}"), "0".to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let problems = parse(&args).unwrap_err();
    for option in zeroes {
        assert!(
            problems.iter().any(|p| p.option == option),
            "{option}: {problems:?}"
        );
    }
}

fn parse_within(limit: Option<u64>, args: &[&str]) -> Result<Config, Vec<Problem>> {
    let mut argv = vec!["sigsci-proxy", "--agents", "127.0.0.1:1"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("clap parses");
    Config::load_within(cli.options, limit)
}

#[test]
fn under_a_memory_limit_the_unset_budget_options_are_derived_from_it() {
    let c = parse_within(Some(256 << 20), &[]).unwrap();
    assert_eq!(
        memory_budget::Budget::of(&c),
        memory_budget::derive(256 << 20, c.max_frame_bytes)
    );
    assert!(c.max_connections < 20_000);
    // Unlimited: the table's.
    let c = parse_within(None, &[]).unwrap();
    assert_eq!(
        (
            c.max_connections,
            c.max_partial_bytes,
            c.max_in_flight_bytes
        ),
        (20_000, 64 << 20, 64 << 20)
    );
}

#[test]
fn an_explicit_budget_option_that_fits_wins_over_the_derived_one() {
    let c = parse_within(Some(256 << 20), &["--max-connections", "1000"]).unwrap();
    assert_eq!(c.max_connections, 1000);
    let derived = memory_budget::derive(256 << 20, c.max_frame_bytes);
    assert_eq!(c.max_partial_bytes, derived.max_partial_bytes);
    // A larger frame limit raises the byte budgets' floor with it.
    let c = parse_within(Some(64 << 20), &["--max-frame-bytes", "8388608"]);
    let problems = c.unwrap_err();
    assert_eq!(problems[0].option, "max-frame-bytes", "{problems:?}");
}

#[test]
fn explicit_budget_options_past_the_memory_limit_are_refused_by_name() {
    let problems = parse_within(Some(256 << 20), &["--max-connections", "20000"]).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].option, "max-connections");
    assert!(problems[0].message.contains("256 MiB"), "{}", problems[0]);
    let problems = parse_within(
        Some(256 << 20),
        &[
            "--max-in-flight-bytes",
            "67108864",
            "--max-partial-bytes",
            "67108864",
        ],
    )
    .unwrap_err();
    assert_eq!(problems[0].option, "max-partial-bytes", "{problems:?}");
    // The same settings with no limit are fine.
    assert!(parse_within(None, &["--max-connections", "20000"]).is_ok());
}
