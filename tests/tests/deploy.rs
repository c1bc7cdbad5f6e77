//! What users deploy with, checked without a docker engine: the compose
//! file names the whole stack, every service has an image or a build and a
//! health check, and every file it mounts from the repository exists; the
//! systemd unit runs the daemon as users are told to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drainguard_e2e::repo_root;
use yaml_rust2::{Yaml, YamlLoader};

fn compose() -> Yaml {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
}

#[test]
fn compose_has_the_whole_stack_each_with_an_image_or_build_and_a_health_check() {
    let doc = compose();
    let services = doc["services"].as_hash().expect("a services map");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for wanted in [
        "drainguard",
        "kafka",
        "prometheus",
        "grafana",
        "anvil",
        "bitcoind",
    ] {
        assert!(names.contains(&wanted), "no {wanted} service in {names:?}");
    }
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        assert!(
            !svc["image"].is_badvalue() || !svc["build"].is_badvalue(),
            "{name} has neither image nor build"
        );
        // Every image here ships a tool the check can run.
        let test = &svc["healthcheck"]["test"];
        assert!(
            test.as_vec().is_some_and(|t| t.len() >= 2),
            "{name} has no health check"
        );
    }
    // KRaft: the broker is its own controller, no ZooKeeper.
    let kafka = &doc["services"]["kafka"]["environment"];
    assert_eq!(
        kafka["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    assert!(!names.contains(&"zookeeper"));
}

#[test]
fn every_file_compose_mounts_exists_and_prometheus_loads_the_alert_rules() {
    let doc = compose();
    let mut mounted = 0;
    for (name, svc) in doc["services"].as_hash().unwrap() {
        let name = name.as_str().unwrap();
        for v in svc["volumes"].as_vec().into_iter().flatten() {
            let spec = v.as_str().unwrap();
            let source = spec.split(':').next().unwrap();
            if let Some(rel) = source.strip_prefix("./") {
                let path = repo_root().join(rel);
                assert!(
                    path.exists(),
                    "{name} mounts {spec}: {} is missing",
                    path.display()
                );
                mounted += 1;
            } else {
                // A named volume: declared at the top level.
                assert!(
                    !doc["volumes"][source].is_badvalue(),
                    "{name} uses volume {source}, which is not declared"
                );
            }
        }
    }
    assert!(mounted >= 5, "{mounted} files mounted");
    // The provisioning points Grafana at the dashboards and Prometheus.
    let provisioning = repo_root().join("dashboards/provisioning");
    let ds = std::fs::read_to_string(provisioning.join("datasources/prometheus.yml")).unwrap();
    assert!(ds.contains("http://prometheus:9090"), "{ds}");
    let prom = std::fs::read_to_string(repo_root().join("config/prometheus.yml")).unwrap();
    assert!(
        prom.contains("alerts.yml"),
        "prometheus.yml loads the rules"
    );
}

#[test]
fn the_systemd_unit_runs_the_daemon_with_its_config_and_reloads_on_hup() {
    let unit = std::fs::read_to_string(repo_root().join("config/drainguard.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/drainguard run --config /etc/drainguard/drainguard.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "User=drainguard",
        "Restart=always",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
    // Secrets come from an environment file, never from the TOML.
    assert!(unit.contains("EnvironmentFile=-/etc/drainguard/secrets.env"));
}
