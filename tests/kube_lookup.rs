//! Pod annotation lookups against a stand-in Kubernetes API server
//! (`common/kube_standin.rs`): real paths, real Pod and Status objects,
//! bearer tokens, kubeconfig files and an in-cluster service account over
//! https. Configuration discovery is tested through explicit
//! [`ConfigSources`], never by changing the process environment (tests run
//! in parallel threads).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::kube_standin::{
    Behaviour, KubeStandin, INTERFACES_SPEC, NETWORKS, NETWORK_STATUS, POD_NAME, POD_NAMESPACE,
    TOKEN,
};
use memif_cni::agent::kube::{is_memif_related, ConfigSources, KubeError, PodLookup};
use memif_cni::api::PodRef;

fn the_pod() -> PodRef {
    PodRef {
        namespace: POD_NAMESPACE.into(),
        name: POD_NAME.into(),
    }
}

fn pod_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{name}")
}

/// Sources that find nothing: no kubeconfig, no in-cluster environment,
/// a home without `.kube/config`.
fn nothing(standin: &KubeStandin) -> ConfigSources {
    let home = standin.dir().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    ConfigSources {
        kubeconfig: None,
        kubeconfig_env: None,
        service_host: None,
        service_port: None,
        service_account_dir: standin.dir().join("no-serviceaccount"),
        home: Some(home),
    }
}

async fn lookup_from(sources: &ConfigSources) -> PodLookup {
    PodLookup::discover_from(sources)
        .await
        .expect("configuration loads")
        .expect("a configuration is found")
}

/// The only request the stand-in saw is our GET of the pod, with the token.
fn assert_one_get(standin: &KubeStandin, ns: &str, name: &str) {
    let reqs = standin.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, pod_path(ns, name));
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn annotations_are_filtered() {
    let standin = KubeStandin::start();
    // The served pod does carry unrelated annotations, so the filter has
    // something to remove.
    let served = standin.pod(POD_NAMESPACE, POD_NAME).unwrap();
    let all = served["metadata"]["annotations"].as_object().unwrap();
    assert!(all.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert!(all.contains_key("prometheus.io/scrape"));
    assert_eq!(served["kind"], "Pod");

    let lookup = PodLookup::discover(Some(&standin.kubeconfig()))
        .await
        .unwrap()
        .expect("explicit kubeconfig is used");
    let got = lookup.annotations(&the_pod()).await.unwrap();

    let expected = BTreeMap::from([
        (
            "k8s.v1.cni.cncf.io/networks".to_string(),
            NETWORKS.to_string(),
        ),
        (
            "cni.projectcalico.org/vppInterfacesSpec".to_string(),
            INTERFACES_SPEC.to_string(),
        ),
        (
            "k8s.v1.cni.cncf.io/network-status".to_string(),
            NETWORK_STATUS.to_string(),
        ),
    ]);
    assert_eq!(got, expected);
    assert!(got.keys().all(|k| is_memif_related(k)));
    assert!(all.len() > got.len());
    assert_one_get(&standin, POD_NAMESPACE, POD_NAME);
}

#[tokio::test]
async fn pod_without_annotations_gives_an_empty_map() {
    let standin = KubeStandin::start();
    standin.insert_pod("demo", "plain", &BTreeMap::new());
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(standin.kubeconfig()),
        ..nothing(&standin)
    })
    .await;
    let pod = PodRef {
        namespace: "demo".into(),
        name: "plain".into(),
    };
    assert_eq!(lookup.annotations(&pod).await.unwrap(), BTreeMap::new());
    assert_one_get(&standin, "demo", "plain");
}

#[tokio::test]
async fn unknown_pod_is_not_found() {
    let standin = KubeStandin::start();
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(standin.kubeconfig()),
        ..nothing(&standin)
    })
    .await;
    let pod = PodRef {
        namespace: "demo".into(),
        name: "gone-5d8f7".into(),
    };
    let e = lookup.annotations(&pod).await.unwrap_err();
    let KubeError::NotFound { pod: id, source } = &e else {
        panic!("expected NotFound, got {e:?}");
    };
    assert_eq!(id, "demo/gone-5d8f7");
    let kube::Error::Api(status) = source else {
        panic!("expected an API status, got {source:?}");
    };
    // The Status object was read, not made up from the HTTP code.
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.message, "pods \"gone-5d8f7\" not found");
    assert_one_get(&standin, "demo", "gone-5d8f7");
}

#[tokio::test]
async fn forbidden_and_unauthorized_are_told_apart() {
    let standin = KubeStandin::start();
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(standin.kubeconfig()),
        ..nothing(&standin)
    })
    .await;
    standin.set_behaviour(Behaviour::Forbid);
    let e = lookup.annotations(&the_pod()).await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e:?}");

    // A wrong token: the stand-in answers 401.
    standin.set_behaviour(Behaviour::Serve);
    let wrong = standin.dir().join("wrong-token");
    std::fs::write(&wrong, standin.kubeconfig_yaml("not-the-token")).unwrap();
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(wrong),
        ..nothing(&standin)
    })
    .await;
    let e = lookup.annotations(&the_pod()).await.unwrap_err();
    assert!(matches!(e, KubeError::Api { code: 401, .. }), "{e:?}");
    let reqs = standin.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].header("authorization"),
        Some("Bearer not-the-token")
    );
}

#[tokio::test]
async fn invalid_pod_refs_are_refused_before_any_request() {
    let standin = KubeStandin::start();
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(standin.kubeconfig()),
        ..nothing(&standin)
    })
    .await;
    let pod = PodRef {
        namespace: "demo".into(),
        name: "x/../../secrets/y".into(),
    };
    let e = lookup.annotations(&pod).await.unwrap_err();
    assert!(matches!(e, KubeError::InvalidPod { .. }), "{e:?}");
    assert!(standin.requests().is_empty());
}

#[tokio::test]
async fn stopped_server_fails_fast() {
    let standin = KubeStandin::start();
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(standin.kubeconfig()),
        ..nothing(&standin)
    })
    .await
    .with_timeout(Duration::from_secs(3));
    drop(standin); // the port is closed now
    let t = Instant::now();
    let e = lookup.annotations(&the_pod()).await.unwrap_err();
    assert!(matches!(e, KubeError::Transport { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn hung_server_times_out() {
    let standin = KubeStandin::start();
    standin.set_behaviour(Behaviour::Silent);
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(standin.kubeconfig()),
        ..nothing(&standin)
    })
    .await
    .with_timeout(Duration::from_millis(400));
    let t = Instant::now();
    let e = lookup.annotations(&the_pod()).await.unwrap_err();
    let elapsed = t.elapsed();
    assert!(
        matches!(e, KubeError::Timeout { after, .. } if after == Duration::from_millis(400)),
        "{e:?}"
    );
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // The request did reach the server: the timeout is the answer's.
    assert_one_get(&standin, POD_NAMESPACE, POD_NAME);
}

#[tokio::test]
async fn no_configuration_at_all_is_none() {
    let standin = KubeStandin::start();
    assert!(PodLookup::discover_from(&nothing(&standin))
        .await
        .unwrap()
        .is_none());

    // KUBERNETES_SERVICE_HOST is set in every pod, also without a mounted
    // token: that is no configuration either.
    let no_token = ConfigSources {
        service_host: Some("10.96.0.1".into()),
        service_port: Some("443".into()),
        ..nothing(&standin)
    };
    assert!(PodLookup::discover_from(&no_token).await.unwrap().is_none());

    // A set KUBECONFIG naming no existing file replaces ~/.kube/config (as
    // with kubectl), even when that one exists.
    let home = standin.dir().join("home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    std::fs::copy(standin.kubeconfig(), home.join(".kube/config")).unwrap();
    let env_missing = ConfigSources {
        kubeconfig_env: Some(standin.dir().join("missing").into_os_string()),
        home: Some(home.clone()),
        ..nothing(&standin)
    };
    assert!(PodLookup::discover_from(&env_missing)
        .await
        .unwrap()
        .is_none());
    // ... and without KUBECONFIG the same home is found.
    let from_home = lookup_from(&ConfigSources {
        home: Some(home.clone()),
        ..nothing(&standin)
    })
    .await;
    assert!(from_home.origin().contains(".kube/config"));
    from_home.annotations(&the_pod()).await.unwrap();
    assert_one_get(&standin, POD_NAMESPACE, POD_NAME);
}

#[tokio::test]
async fn explicit_kubeconfig_wins_over_the_environment() {
    let chosen = KubeStandin::start();
    let other = KubeStandin::start();
    let lookup = lookup_from(&ConfigSources {
        kubeconfig: Some(chosen.kubeconfig()),
        kubeconfig_env: Some(other.kubeconfig().into_os_string()),
        service_host: Some("127.0.0.1".into()),
        service_port: Some(other.addr().port().to_string()),
        service_account_dir: other.service_account_dir(),
        home: None,
    })
    .await;
    assert!(lookup
        .origin()
        .contains(&chosen.kubeconfig().display().to_string()));
    lookup.annotations(&the_pod()).await.unwrap();
    assert_one_get(&chosen, POD_NAMESPACE, POD_NAME);
    assert!(other.requests().is_empty());
}

#[tokio::test]
async fn kubeconfig_env_skips_missing_files_and_wins_over_in_cluster() {
    let chosen = KubeStandin::start();
    let other = KubeStandin::start_tls();
    let list =
        std::env::join_paths([chosen.dir().join("does-not-exist"), chosen.kubeconfig()]).unwrap();
    let lookup = lookup_from(&ConfigSources {
        kubeconfig_env: Some(list),
        service_host: Some("127.0.0.1".into()),
        service_port: Some(other.addr().port().to_string()),
        service_account_dir: other.service_account_dir(),
        ..nothing(&chosen)
    })
    .await;
    assert!(
        lookup.origin().starts_with("KUBECONFIG "),
        "{}",
        lookup.origin()
    );
    lookup.annotations(&the_pod()).await.unwrap();
    assert_one_get(&chosen, POD_NAMESPACE, POD_NAME);
    assert!(other.requests().is_empty());
}

#[tokio::test]
async fn in_cluster_over_tls_with_the_service_account_token() {
    let standin = KubeStandin::start_tls();
    assert!(standin.url().starts_with("https://127.0.0.1:"));
    let lookup = lookup_from(&ConfigSources {
        service_host: Some("127.0.0.1".into()),
        service_port: Some(standin.addr().port().to_string()),
        service_account_dir: standin.service_account_dir(),
        ..nothing(&standin)
    })
    .await;
    assert!(
        lookup.origin().starts_with("in-cluster"),
        "{}",
        lookup.origin()
    );
    let got = lookup.annotations(&the_pod()).await.unwrap();
    assert_eq!(got["k8s.v1.cni.cncf.io/networks"], NETWORKS);
    // The token came from the service account's token file.
    assert_one_get(&standin, POD_NAMESPACE, POD_NAME);
}

#[tokio::test]
async fn in_cluster_rejects_a_server_outside_its_ca() {
    let standin = KubeStandin::start_tls();
    // A CA bundle that does not hold the stand-in's CA: the system roots.
    let sa = standin.dir().join("other-ca");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::copy(
        standin.service_account_dir().join("token"),
        sa.join("token"),
    )
    .unwrap();
    let system_ca = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    let Some(system_ca) = system_ca else {
        panic!("this test needs a system CA bundle (Debian: ca-certificates)");
    };
    std::fs::copy(system_ca, sa.join("ca.crt")).unwrap();
    let lookup = lookup_from(&ConfigSources {
        service_host: Some("127.0.0.1".into()),
        service_port: Some(standin.addr().port().to_string()),
        service_account_dir: sa,
        ..nothing(&standin)
    })
    .await;
    let e = lookup.annotations(&the_pod()).await.unwrap_err();
    assert!(matches!(e, KubeError::Transport { .. }), "{e:?}");
    // TLS failed before any request could be read.
    assert!(standin.requests().is_empty());
}

#[tokio::test]
async fn broken_configurations_are_errors() {
    let standin = KubeStandin::start();
    let dir = standin.dir();

    let missing = ConfigSources {
        kubeconfig: Some(dir.join("no-such-kubeconfig")),
        ..nothing(&standin)
    };
    let e = PodLookup::discover_from(&missing).await.unwrap_err();
    assert!(matches!(e, KubeError::Config { .. }), "{e:?}");

    let garbage = dir.join("garbage");
    std::fs::write(
        &garbage,
        "clusters: [\n  - {name: x, cluster: {server: 1}\n",
    )
    .unwrap();
    let e = PodLookup::discover_from(&ConfigSources {
        kubeconfig: Some(garbage.clone()),
        ..nothing(&standin)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, KubeError::Config { .. }), "{e:?}");
    // The same broken file through KUBECONFIG, and as ~/.kube/config.
    let e = PodLookup::discover_from(&ConfigSources {
        kubeconfig_env: Some(garbage.clone().into_os_string()),
        ..nothing(&standin)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, KubeError::Config { .. }), "{e:?}");
    let home = dir.join("broken-home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    std::fs::copy(&garbage, home.join(".kube/config")).unwrap();
    let e = PodLookup::discover_from(&ConfigSources {
        home: Some(home),
        ..nothing(&standin)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, KubeError::Config { .. }), "{e:?}");

    // Valid YAML, but its current context names no context.
    let no_context = dir.join("no-context");
    std::fs::write(
        &no_context,
        standin.kubeconfig_yaml(TOKEN).replace(
            "current-context: memifd@standin",
            "current-context: elsewhere",
        ),
    )
    .unwrap();
    let e = PodLookup::discover_from(&ConfigSources {
        kubeconfig: Some(no_context),
        ..nothing(&standin)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, KubeError::Config { .. }), "{e:?}");

    // In-cluster: a token but no CA bundle.
    let sa = dir.join("sa-without-ca");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), TOKEN).unwrap();
    let e = PodLookup::discover_from(&ConfigSources {
        service_host: Some("127.0.0.1".into()),
        service_port: Some("6443".into()),
        service_account_dir: sa.clone(),
        ..nothing(&standin)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, KubeError::Config { .. }), "{e:?}");

    // In-cluster: a port that is not one.
    let e = PodLookup::discover_from(&ConfigSources {
        service_host: Some("127.0.0.1".into()),
        service_port: Some("https".into()),
        service_account_dir: standin.service_account_dir(),
        ..nothing(&standin)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, KubeError::ServicePort { .. }), "{e:?}");

    // None of this reached the server.
    assert!(standin.requests().is_empty());
}
