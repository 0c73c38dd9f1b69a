//! The caching allocator of the CUDA and emulated devices (issue 20): a training step of fixed
//! shapes allocates the same sizes in the same order every step, so a buffer that drops goes back
//! to a free list of its device, keyed by its size in bytes, and the next allocation of that size
//! takes it instead of asking the driver (CUDA) or the host allocator (emulated) again, as
//! PyTorch's caching allocator does. From the second step on, a step is served from the cache
//! alone: `CounterSnapshot::fresh_allocations` stays at zero (`tests/train_step.rs`), and the
//! step's memory is stable, which a captured CUDA graph needs (`graph.rs`).
//!
//! How a buffer finds its way back: [`Buffer`] is an enum of a host `Vec` and a cudarc slice with
//! no room for a pool handle, so each buffer the device hands out (fresh or from the cache) is
//! entered in one process-wide table, keyed by where its memory is (host or CUDA) and its address,
//! with a weak reference to its device's cache and its element type and length. `Buffer`'s `Drop`
//! looks the address up (only while some buffer is lent: one relaxed atomic read otherwise) and,
//! when the entry matches, moves the memory into the cache instead of freeing it. A buffer that
//! leaves the crate without a drop ([`Buffer::into_cuda_slice`] and friends) is taken out of the
//! table first. The CPU reference device does not cache (its buffers are never entered).
//!
//! Reuse is safe on one stream: a buffer drops on the host after every kernel that uses it was
//! queued, and whatever reuses it is queued after those kernels on the same stream (the emulated
//! device runs everything synchronously). Blocks are exact sizes (no splitting or rounding): a
//! step of fixed shapes asks for the same sizes each time; the last, shorter batch of an epoch
//! adds its own sizes once. [`MemoryCache::release_all`] (`Device::empty_cache`) gives every
//! cached block back.
//!
//! A captured CUDA graph step (`graph.rs`) keeps its blocks: while it is captured the cache
//! records every block it hands out ([`MemoryCache::begin_recording`]), and afterwards those
//! blocks are reserved for the graph ([`Reservation`]): out of the free lists, not freed by
//! [`MemoryCache::release_all`], until the reservation drops (the graph's drop or a new capture).
//! The emulated device checks a replay by handing the step's code exactly those blocks again, in
//! the capture's order ([`MemoryCache::begin_replay_check`]).
//!
//! The poison mode (`Device::uninitialized`) fills a reused buffer with `Scalar::POISON` just as
//! a fresh one, so a kernel that skips a slot still reads NaN, not last step's value.
use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use cudarc::driver::CudaStream;

use super::buffer::Memory;
use super::{Buffer, Scalar};

/// A cached block: a host vector (its element type erased) or a raw CUDA allocation.
enum Block {
    Host(Box<dyn Any + Send>),
    Cuda(cudarc::driver::sys::CUdeviceptr),
}

/// One device's free lists. `Send + Sync`.
pub struct MemoryCache {
    /// The stream CUDA blocks are turned back into slices on (and freed on); `None` on the
    /// emulated device.
    stream: Option<Arc<CudaStream>>,
    free: Mutex<FreeLists>,
}

#[derive(Default)]
struct FreeLists {
    /// Bytes → blocks of exactly that size (with their addresses), last freed on top.
    by_bytes: HashMap<usize, Vec<(u64, Block)>>,
    /// Bytes held in `by_bytes`.
    bytes: usize,
    /// While a step is captured (`MemoryCache::begin_recording`): every block handed out from
    /// the free lists, (bytes, address) in order.
    recording: Option<Vec<(usize, u64)>>,
    /// While a replay is checked on the emulated device (`MemoryCache::begin_replay_check`):
    /// the addresses the captured step took, per size, still to hand out.
    script: Option<HashMap<usize, std::collections::VecDeque<u64>>>,
    /// The blocks of a captured step's graph (`Reservation`): the addresses, and those of them
    /// back from their buffers (bytes → blocks), which no allocation can take.
    reserved_addresses: HashSet<u64>,
    reserved: HashMap<usize, Vec<(u64, Block)>>,
    /// Bytes held in `reserved`.
    reserved_bytes: usize,
    /// Reservations made so far: a `Reservation` releases only its own (the latest).
    generation: u64,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryCache({} bytes cached)", self.cached_bytes())
    }
}

/// Where a lent buffer's memory is and its address: the key of the lent table.
type Address = (bool, u64);

/// What the lent table knows of a buffer the cache handed out.
struct Lent {
    cache: Weak<MemoryCache>,
    type_id: TypeId,
    len: usize,
}

static LENT: LazyLock<Mutex<HashMap<Address, Lent>>> = LazyLock::new(Default::default);
/// Entries in `LENT`: `Buffer`'s drop skips the lock while it is zero (the CPU device's buffers).
static LENT_COUNT: AtomicUsize = AtomicUsize::new(0);

fn lent_table() -> std::sync::MutexGuard<'static, HashMap<Address, Lent>> {
    LENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The address of a buffer's memory; `None` for an empty buffer (never cached: empty vectors
/// share one dangling address).
fn address<T: Scalar>(buffer: &Buffer<T>) -> Option<Address> {
    if buffer.is_empty() {
        return None;
    }
    Some((matches!(buffer, Buffer::Cuda(_)), buffer.address()))
}

impl MemoryCache {
    /// The emulated device's cache (host vectors).
    pub(crate) fn host() -> Arc<Self> {
        Arc::new(MemoryCache {
            stream: None,
            free: Mutex::default(),
        })
    }

    /// A CUDA device's cache: blocks are allocations on `stream`'s context.
    pub(crate) fn cuda(stream: Arc<CudaStream>) -> Arc<Self> {
        Arc::new(MemoryCache {
            stream: Some(stream),
            free: Mutex::default(),
        })
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, FreeLists> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held in the free lists now.
    pub fn cached_bytes(&self) -> usize {
        self.lists().bytes
    }

    /// A cached buffer of `len` elements of `T`, if a block of that many bytes is free; its
    /// contents are whatever its last user left (the caller fills or overwrites it).
    pub(crate) fn take<T: Scalar>(&self, len: usize) -> Option<Buffer<T>> {
        let bytes = len * size_of::<T>();
        if bytes == 0 {
            return None;
        }
        let block = {
            let mut lists = self.lists();
            let lists = &mut *lists;
            // A host block must hold `T`s (its allocation's layout); any CUDA block fits.
            let fits = |b: &Block| match b {
                Block::Host(v) => v.is::<Vec<T>>(),
                Block::Cuda(_) => true,
            };
            if let Some(script) = lists.script.as_mut() {
                // A replay checked on the emulated device: the captured step's block, in the
                // capture's order, from the reservation; anything else is not the captured step.
                let expected = script.get_mut(&bytes)?.pop_front()?;
                let list = lists.reserved.get_mut(&bytes)?;
                let position = list
                    .iter()
                    .position(|(address, b)| *address == expected && fits(b))?;
                let (_, block) = list.remove(position);
                lists.reserved_bytes -= bytes;
                return self.unwrap_block::<T>(block, len);
            }
            let list = lists.by_bytes.get_mut(&bytes)?;
            let position = list.iter().rposition(|(_, b)| fits(b))?;
            let (address, block) = list.remove(position);
            lists.bytes -= bytes;
            if let Some(recorded) = lists.recording.as_mut() {
                recorded.push((bytes, address));
            }
            block
        };
        self.unwrap_block::<T>(block, len)
    }

    /// A block taken out of the lists as a buffer of `len` elements of `T`.
    fn unwrap_block<T: Scalar>(&self, block: Block, len: usize) -> Option<Buffer<T>> {
        match block {
            Block::Host(v) => match v.downcast::<Vec<T>>() {
                Ok(v) => Some(Buffer::Host(*v)),
                Err(_) => None,
            },
            Block::Cuda(ptr) => {
                let stream = self.stream.as_ref()?;
                // SAFETY: `ptr` is an allocation of `bytes` bytes on this stream's context that
                // this cache owns (it came back through `put`); `T` is plain old data.
                Some(Buffer::Cuda(unsafe {
                    stream.upgrade_device_ptr::<T>(ptr, len)
                }))
            }
        }
    }

    /// Enters `buffer` in the lent table: when it drops, it comes back to this cache.
    pub(crate) fn lend<T: Scalar>(self: &Arc<Self>, buffer: &Buffer<T>) {
        if let Some(key) = address(buffer) {
            let lent = Lent {
                cache: Arc::downgrade(self),
                type_id: TypeId::of::<T>(),
                len: buffer.len(),
            };
            if lent_table().insert(key, lent).is_none() {
                LENT_COUNT.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Puts a dropped buffer's memory on its free list, or, when it is one of a captured step's
    /// graph's blocks (outside the capture), into the reservation.
    fn put<T: Scalar>(&self, buffer: Buffer<T>) {
        let bytes = buffer.len() * size_of::<T>();
        // The address without `Buffer::address` (whose CUDA form records an event).
        let (address, block) = match buffer.into_memory() {
            Memory::Host(v) => (v.as_ptr() as u64, Block::Host(Box::new(v))),
            Memory::Cuda(s) => {
                let ptr = s.leak();
                (ptr, Block::Cuda(ptr))
            }
        };
        let mut lists = self.lists();
        if lists.recording.is_none() && lists.reserved_addresses.contains(&address) {
            lists
                .reserved
                .entry(bytes)
                .or_default()
                .push((address, block));
            lists.reserved_bytes += bytes;
            return;
        }
        lists
            .by_bytes
            .entry(bytes)
            .or_default()
            .push((address, block));
        lists.bytes += bytes;
    }

    /// Bytes held for a captured step's graph (`Reservation`) now: blocks back from their
    /// buffers that no allocation may take.
    pub fn reserved_bytes(&self) -> usize {
        self.lists().reserved_bytes
    }

    /// From now on (until [`MemoryCache::end_recording`]) records every block handed out: the
    /// memory of a step being captured. Releases a reservation still held (a recapture: the
    /// step being captured reuses the previous graph's blocks, queued after its last launch).
    pub(crate) fn begin_recording(&self) {
        self.release_reservation();
        self.lists().recording = Some(Vec::new());
    }

    /// Until [`MemoryCache::end_replay_check`], every block handed out is the one the captured
    /// step of `reservation` took at that point (per size, in order), from the reservation, and
    /// nothing else is: the step's code run again on the emulated device allocates as a replay
    /// of its graph addresses memory.
    pub(crate) fn begin_replay_check(&self, reservation: &Reservation) {
        let mut script: HashMap<usize, std::collections::VecDeque<u64>> = HashMap::new();
        for &(bytes, address) in &reservation.taken {
            script.entry(bytes).or_default().push_back(address);
        }
        self.lists().script = Some(script);
    }

    /// Ends the check; the number of the captured step's blocks it did not hand out.
    pub(crate) fn end_replay_check(&self) -> usize {
        let script = self.lists().script.take().unwrap_or_default();
        script.values().map(|q| q.len()).sum()
    }

    /// Ends the recording and reserves its blocks for the captured graph: those already back in
    /// the free lists leave them, those still lent go to the reservation when they drop. The
    /// reservation lasts until the returned handle drops. One reservation per cache: a device
    /// runs one step graph at a time.
    pub(crate) fn end_recording(self: &Arc<Self>) -> Reservation {
        let mut lists = self.lists();
        let taken = lists.recording.take().unwrap_or_default();
        let recorded: HashSet<u64> = taken.iter().map(|&(_, address)| address).collect();
        let mut moved = 0;
        let mut reserved: Vec<(usize, (u64, Block))> = Vec::new();
        for (bytes, list) in lists.by_bytes.iter_mut() {
            let mut i = 0;
            while i < list.len() {
                if recorded.contains(&list[i].0) {
                    reserved.push((*bytes, list.remove(i)));
                    moved += *bytes;
                } else {
                    i += 1;
                }
            }
        }
        lists.bytes -= moved;
        lists.reserved_bytes += moved;
        for (bytes, entry) in reserved {
            lists.reserved.entry(bytes).or_default().push(entry);
        }
        lists.reserved_addresses.extend(recorded);
        lists.generation += 1;
        Reservation {
            cache: Arc::clone(self),
            generation: lists.generation,
            taken,
        }
    }

    /// Returns every reserved block to the free lists and forgets the reserved addresses.
    fn release_reservation(&self) {
        let mut lists = self.lists();
        let lists = &mut *lists;
        lists.reserved_addresses.clear();
        for (bytes, blocks) in lists.reserved.drain() {
            lists.bytes += bytes * blocks.len();
            lists.by_bytes.entry(bytes).or_default().extend(blocks);
        }
        lists.reserved_bytes = 0;
    }

    /// Frees every cached block (lent buffers are not affected; they come back when they drop;
    /// nor are a captured graph's reserved blocks: a replay writes into them).
    pub fn release_all(&self) {
        let blocks: Vec<(usize, Block)> = {
            let mut lists = self.lists();
            lists.bytes = 0;
            lists
                .by_bytes
                .drain()
                .flat_map(|(bytes, list)| list.into_iter().map(move |(_, b)| (bytes, b)))
                .collect()
        };
        for (bytes, block) in blocks {
            if let (Block::Cuda(ptr), Some(stream)) = (block, &self.stream) {
                // SAFETY: a block of `bytes` bytes this cache owns; the slice frees it on drop.
                drop(unsafe { stream.upgrade_device_ptr::<u8>(ptr, bytes) });
            }
        }
    }
}

impl Drop for MemoryCache {
    fn drop(&mut self) {
        // No reservation outlives the cache (it holds an `Arc` of it): give back what is left.
        self.release_reservation();
        self.release_all();
    }
}

/// The memory cache's blocks of a captured step (`MemoryCache::end_recording`), held for its
/// graph (`StepGraph`): no allocation outside the step takes them and `Device::empty_cache` does
/// not free them, so a replay writes only into memory that is its own. Dropping it returns them
/// to the free lists.
pub struct Reservation {
    cache: Arc<MemoryCache>,
    generation: u64,
    /// The blocks the captured step took, (bytes, address) in order.
    taken: Vec<(usize, u64)>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation({} bytes back)", self.cache.reserved_bytes())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // A later capture's reservation replaced this one already: not ours to release.
        if self.cache.lists().generation == self.generation {
            self.cache.release_reservation();
        }
    }
}

/// Called by `Buffer`'s drop: takes the buffer out of the lent table and, when it was lent by a
/// cache that still exists and is what the table says (type and length), returns that cache.
pub(crate) fn reclaim<T: Scalar>(buffer: &Buffer<T>) -> Option<Arc<MemoryCache>> {
    if LENT_COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let key = address(buffer)?;
    let lent = lent_table().remove(&key)?;
    LENT_COUNT.fetch_sub(1, Ordering::Relaxed);
    if lent.type_id != TypeId::of::<T>() || lent.len != buffer.len() {
        return None;
    }
    lent.cache.upgrade()
}

/// Takes a buffer out of the lent table without caching it: its memory leaves the crate
/// ([`Buffer::into_cuda_slice`], [`Buffer::into_host_vec`]).
pub(crate) fn forget<T: Scalar>(buffer: &Buffer<T>) {
    if LENT_COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    if let Some(key) = address(buffer) {
        if lent_table().remove(&key).is_some() {
            LENT_COUNT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Returns a dropping buffer's memory to its cache (the body of `Buffer`'s `Drop`).
pub(crate) fn on_drop<T: Scalar>(buffer: &mut Buffer<T>) {
    if let Some(cache) = reclaim(buffer) {
        let taken = std::mem::replace(buffer, Buffer::Host(Vec::new()));
        cache.put(taken);
    }
}
