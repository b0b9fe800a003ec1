//! The engine and its instance pool: how much every plugin instance of the process may reserve,
//! and the epoch that times them.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of time limits and of yielding. 10 ms: a
/// looping plugin holds its worker thread at most this long before other connections run, and
/// a tick costs one atomic increment, so it is cheap at this rate.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of a memory or table slot reset in place (not returned to the kernel) when an
/// instance ends: enough for a small plugin's working set.
const KEEP_RESIDENT: usize = 2 << 20;
/// Slots decommitted together, in one pass.
const DECOMMIT_BATCH: usize = 16;
/// Address space reserved for each linear memory, and the guard after it: wasmtime's defaults
/// on 64-bit hosts (with 4 GiB reserved, compiled code needs no bounds checks), set here
/// because the pool's size is computed from them.
const MEMORY_RESERVATION: u64 = 4 << 30;
const MEMORY_GUARD: u64 = 32 << 20;
/// Most elements of a table (8 octets each, reserved for every table slot of the pool): far
/// more than the function tables of the plugins built here (a few thousand entries for the
/// Python and JavaScript runtimes), and 800 KB of address space per slot.
pub(super) const TABLE_ELEMENTS: usize = 100_000;
/// Address space the pool may reserve: half of x86-64's 128 TiB of user address space, the
/// rest left to everything else in the process. Reserving is free (no memory is committed),
/// but past the address space the engine cannot be made.
const ADDRESS_SPACE_BUDGET: u64 = 64 << 40;
/// Core instances per component instance (its modules, the WASI adapter, the shims between
/// them). The pool only counts them, nothing is reserved per core instance, so the number is
/// generous; a store's limiter allows as many (`limits.rs`).
pub(super) const CORE_INSTANCES_PER_COMPONENT: u32 = 64;
/// Largest metadata (VMContext) of one component or core instance: a check, not a
/// reservation. Ten times wasmtime's default of 1 MiB, so that no large component (the Python
/// and JavaScript runtimes) is refused for it.
const MAX_INSTANCE_SIZE: usize = 10 << 20;

/// What one connection can hold at once: an instance of every plugin in the chain (a scope
/// keeps at most one per plugin), with the linear memories and tables those instances have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainNeeds {
    pub instances: u32,
    pub memories: u32,
    pub tables: u32,
}

impl ChainNeeds {
    /// Adds a plugin; `None` (a component whose needs cannot be known statically, which
    /// imports core modules) is assumed to need 8 memories and 8 tables.
    pub fn add(&mut self, component: Option<wasmtime::ResourcesRequired>) {
        let (memories, tables) = component.map_or((8, 8), |r| (r.num_memories, r.num_tables));
        self.instances += 1;
        self.memories += memories;
        self.tables += tables;
    }
}

/// A pool that cannot be backed: more address space than the pool may reserve (64 TiB).
#[derive(Debug, thiserror::Error)]
#[error(
    "max_connections {max_connections} cannot be served: each connection may hold an instance of every plugin, \
     {memories} linear memories of {slot_gib} GiB of address space each; at most {fits} connections fit in the \
     {budget_tib} TiB the plugin pool may reserve"
)]
pub struct PoolTooLarge {
    pub max_connections: usize,
    pub memories: u32,
    pub slot_gib: u64,
    pub fits: usize,
    pub budget_tib: u64,
}

/// The pooling allocator's slots (`max_memory`, `max_stack`: the largest limits of any plugin),
/// for `max_connections` connections that each hold an instance
/// of every plugin of the chain (`needs`): then no client can take slots from another, and
/// running out of slots is a server fault, never a plugin's (see `chain.rs`).
///
/// Every count is per connection times the connections, plus a margin: a scope ends before
/// its connection's admission ticket, so at most `max_connections` scopes exist, but an unused
/// slot costs only address space while a missing one turns into temporary failures, so we
/// leave 1/16 + 16 connections of room. Stacks are one per instance: a store keeps the fiber
/// stack of its last call for the next one. (Every plugin built in this tree, Rust, Python,
/// JavaScript or C, has one linear memory and one or two tables.)
pub fn pool(
    max_connections: usize,
    needs: ChainNeeds,
    max_memory: u64,
    max_stack: usize,
) -> Result<PoolingAllocationConfig, PoolTooLarge> {
    let connections = max_connections.saturating_add(max_connections / 16 + 16);
    let memory_slot = MEMORY_RESERVATION.max(max_memory) + MEMORY_GUARD;
    let per_connection = needs.memories as u64 * memory_slot
        + needs.tables as u64 * (TABLE_ELEMENTS as u64 * 8)
        + needs.instances as u64 * async_stack_size(max_stack) as u64;
    let too_large = || PoolTooLarge {
        max_connections,
        memories: needs.memories,
        slot_gib: memory_slot.div_ceil(1 << 30),
        fits: ((ADDRESS_SPACE_BUDGET / per_connection.max(1)) as usize).saturating_sub(16) * 16 / 17,
        budget_tib: ADDRESS_SPACE_BUDGET >> 40,
    };
    if (connections as u64).checked_mul(per_connection).is_none_or(|total| total > ADDRESS_SPACE_BUDGET) {
        return Err(too_large());
    }
    let count = |per: u32| u32::try_from(connections as u64 * per.max(1) as u64).map_err(|_| too_large());
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(count(needs.instances)?)
        .total_core_instances(count(needs.instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))?)
        .total_memories(count(needs.memories)?)
        .total_tables(count(needs.tables)?)
        .total_stacks(count(needs.instances)?)
        .max_memory_size(max_memory as usize)
        .max_component_instance_size(MAX_INSTANCE_SIZE)
        .max_core_instance_size(MAX_INSTANCE_SIZE)
        .table_elements(TABLE_ELEMENTS)
        // Resetting a slot for reuse: dirty pages found with PAGEMAP_SCAN (Linux 6.7+) are
        // restored with memset, instead of madvise over the whole slot, whose TLB shootdowns
        // interrupt every other thread (they were a quarter of the server's CPU under load).
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .decommit_batch_size(DECOMMIT_BATCH);
    Ok(pool)
}

/// The async (fiber) stack an instance runs on: the wasm stack plus 1 MiB for the host calls
/// made from it (WASI, the `host` interface), which run on the same stack.
fn async_stack_size(max_stack: usize) -> usize {
    max_stack + (1 << 20)
}

/// An engine. `max_stack` is the largest wasm stack of any plugin; `pool` is from [`pool`].
/// The process has one engine that runs plugins
/// (with its epoch ticker, [`start_epoch_ticker`]); a probe engine with a small pool may come
/// first, to learn what the components need (its compiled code serves both: the pool's size
/// is not part of the engine's compatibility hash).
pub fn engine(max_stack: usize, pool: PoolingAllocationConfig) -> anyhow::Result<Engine> {
    let mut cfg = Config::new();
    // Time limits and fair scheduling: see `limits::PluginLimits::epoch_callback`.
    cfg.epoch_interruption(true);
    // A deep recursion traps instead of taking the host down.
    cfg.max_wasm_stack(max_stack);
    cfg.async_stack_size(async_stack_size(max_stack));
    cfg.memory_reservation(MEMORY_RESERVATION);
    cfg.memory_guard_size(MEMORY_GUARD);
    // No WASIp3 / component-model-async: calls are 2-4x cheaper without it.
    cfg.concurrency_support(false);
    // Pooling: instantiation reuses pre-reserved slots (tens of µs, no mmap per instance).
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&cfg)?)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmtpd-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_sized_from_the_connections_and_the_chain() {
        let needs = ChainNeeds { instances: 4, memories: 4, tables: 8 };
        let pool = pool(400, needs, 64 << 20, 512 << 10).unwrap();
        // 400 connections and a margin of 1/16 + 16.
        assert_eq!(pool.get_total_component_instances(), 441 * 4);
        assert_eq!(pool.get_total_memories(), 441 * 4);
        assert_eq!(pool.get_total_tables(), 441 * 8);
        assert_eq!(pool.get_total_stacks(), 441 * 4);
        // A limit that cannot be reserved says how many would fit.
        let e = super::pool(1_000_000, needs, 64 << 20, 512 << 10).unwrap_err();
        assert!(e.fits > 1000 && e.fits < 5000, "{e}");
        assert!(super::pool(e.fits, needs, 64 << 20, 512 << 10).is_ok(), "{e}");
        assert!(super::pool(e.fits + 10, needs, 64 << 20, 512 << 10).is_err(), "{e}");
    }

    #[test]
    fn the_probe_engine_compiles_for_the_real_one() {
        // The pool's size is not part of the compatibility hash, so what the probe engine
        // compiles (and caches) is what the engine that runs plugins loads.
        use std::hash::{Hash, Hasher};
        let hash = |e: &Engine| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            e.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        let probe = engine(
            512 << 10,
            pool(1, ChainNeeds { instances: 1, memories: 1, tables: 1 }, 64 << 20, 512 << 10).unwrap(),
        );
        let real = engine(
            512 << 10,
            pool(50, ChainNeeds { instances: 6, memories: 6, tables: 12 }, 64 << 20, 512 << 10).unwrap(),
        );
        assert_eq!(hash(&probe.unwrap()), hash(&real.unwrap()));
    }
}
