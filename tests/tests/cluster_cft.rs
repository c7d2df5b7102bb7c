//! The same rollback attack against the crash-fault baseline (DESIGN §3,
//! §13): majority quorums trust a restarted replica's state, so rolling back
//! `M_R = 2` replicas' sealed stores makes a read return a value older than a
//! completed write. This test asserts the violation, which is what shows the
//! RR tests (`cluster_rr.rs`) can fail: the scenario is identical.

use anyhow::Result;
use teemsfs_tests::cluster::{TestCluster, adversarial_rollback, serial};

#[test]
fn cft_returns_a_stale_value_after_m_r_rollbacks() -> Result<()> {
    let _one_at_a_time = serial();
    let c = TestCluster::init("cft")?;
    c.start(None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcomes = rt.block_on(adversarial_rollback(&c))?;
    assert!(
        outcomes.iter().any(|o| o.as_deref() == Ok("v1")),
        "CFT should have read the stale v1 (v2 completed before the rollback); got {outcomes:?}"
    );
    Ok(())
}
