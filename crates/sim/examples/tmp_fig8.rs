use sim::{run, FaultSet, PlantedBug, SimConfig, StorageKind};
fn main() {
    std::panic::set_hook(Box::new(|_| {}));
    for storage in [StorageKind::Memory, StorageKind::Wal] {
        let config = SimConfig { ops: 100, chaos_ticks: 600, storage, check_commit_rule: false, faults: FaultSet { disk: false, corrupt: false, ..FaultSet::all() },
            planted_bug: Some(PlantedBug::Core(raft::PlantedBug::CommitOlderTermByCounting)), ..SimConfig::default() };
        let caught: Vec<u64> = (0..1000).filter(|&seed| run(seed, &config).violation.is_some()).collect();
        println!("{storage}: {} of 4000: {:?}", caught.len(), caught);
    }
}
