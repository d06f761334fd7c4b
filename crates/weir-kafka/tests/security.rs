//! SASL against a real broker: PLAIN and SCRAM-SHA-256/512 connect with the right password
//! (read from a file); a wrong password fails fast with an authentication
//! error naming the broker; the password appears in no error and no `Debug` output.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSource, Sasl, SaslMechanism, Secret, StartOffset};
use weir_runtime::{CollectSink, Pipeline};

fn sasl_config(mechanism: SaslMechanism, password: Secret) -> Option<(KafkaConfig, String)> {
    let kafka = weir_testkit::kafka::broker()?;
    let bootstrap = kafka.sasl_bootstrap.clone()?;
    let config = KafkaConfig::new(bootstrap.clone()).sasl(Sasl {
        mechanism,
        username: kafka.sasl_user.clone(),
        password,
    });
    Some((config, bootstrap))
}

async fn read(config: KafkaConfig, topic: &str) -> weir_runtime::Result<Vec<String>> {
    let p = Pipeline::builder("sasl").parallelism(1).handle_signals(false).build()?;
    let out = CollectSink::new();
    p.source(
        KafkaSource::new(config, [topic.to_owned()], unique("g"))
            .start_offset(StartOffset::Earliest)
            .bounded(),
    )
    .map(|r: KafkaRecord| r.value_str().unwrap().to_owned())
    .sink(out.clone());
    p.run().await?;
    Ok(out.take())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_scram_connect_and_a_wrong_password_fails_fast_without_printing_it() {
    let Some(b) = bootstrap() else { return };
    let kafka = weir_testkit::kafka::broker().unwrap();
    let topic = unique("secure");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[("k".into(), "hello".into())]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{}\n", kafka.sasl_password)).unwrap();

    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let (config, _) = sasl_config(mechanism, Secret::from_file(&file).unwrap()).unwrap();
        assert!(!format!("{config:?}").contains(&kafka.sasl_password), "Debug shows the password");
        assert_eq!(read(config, &topic).await.unwrap(), ["hello"], "{mechanism:?}");
    }

    let wrong = "not-the-password-7f3a";
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, wrong).unwrap();
    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha256] {
        let (config, bootstrap) = sasl_config(mechanism, Secret::from_file(&wrong_file).unwrap()).unwrap();
        let started = Instant::now();
        let err = read(config.clone(), &topic).await.unwrap_err();
        let took = started.elapsed();
        let shown = format!("{err} / {err:?} / {config:?}");
        assert!(took < Duration::from_secs(15), "a wrong password took {took:?} to fail");
        assert!(shown.to_lowercase().contains("authentication"), "{shown}");
        assert!(shown.contains(&bootstrap), "the error names the broker: {shown}");
        assert!(!shown.contains(wrong), "the password is printed: {shown}");
    }
}
