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
//! The poison mode (`Device::uninitialized`) fills a reused buffer with `Scalar::POISON` just as
//! a fresh one, so a kernel that skips a slot still reads NaN, not last step's value.
use std::any::{Any, TypeId};
use std::collections::HashMap;
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
    /// Bytes → blocks of exactly that size, last freed on top.
    by_bytes: HashMap<usize, Vec<Block>>,
    /// Bytes held in `by_bytes`.
    bytes: usize,
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
            let list = lists.by_bytes.get_mut(&bytes)?;
            // A host block must hold `T`s (its allocation's layout); any CUDA block fits.
            let position = list.iter().rposition(|b| match b {
                Block::Host(v) => v.is::<Vec<T>>(),
                Block::Cuda(_) => true,
            })?;
            let block = list.remove(position);
            lists.bytes -= bytes;
            block
        };
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

    /// Puts a dropped buffer's memory on its free list.
    fn put<T: Scalar>(&self, buffer: Buffer<T>) {
        let bytes = buffer.len() * size_of::<T>();
        let block = match buffer.into_memory() {
            Memory::Host(v) => Block::Host(Box::new(v)),
            Memory::Cuda(s) => Block::Cuda(s.leak()),
        };
        let mut lists = self.lists();
        lists.by_bytes.entry(bytes).or_default().push(block);
        lists.bytes += bytes;
    }

    /// Frees every cached block (lent buffers are not affected; they come back when they drop).
    pub fn release_all(&self) {
        let blocks: Vec<(usize, Block)> = {
            let mut lists = self.lists();
            lists.bytes = 0;
            lists
                .by_bytes
                .drain()
                .flat_map(|(bytes, list)| list.into_iter().map(move |b| (bytes, b)))
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
        self.release_all();
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
