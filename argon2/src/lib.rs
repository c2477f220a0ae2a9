//! argon2id (RFC 9106, version 0x13) computed in short slices, with a pause between them.
//!
//! A crate of its own so that it is optimised in debug builds too (a hash would take
//! 0.3 s unoptimised), like the crypto crates it sits beside.
//!
//! Why not only the `argon2` crate: its hash is one call of ~20 ms of CPU. On a kernel that
//! switches a computing thread only at its 4 ms tick (HZ=250, no HRTICK), an async worker
//! that wakes next to a hashing thread waits for that tick, and a login flood then
//! multiplies Authorize's and AssumeRole's p99 (BENCHMARKS.md, "Why the two remaining
//! goals were not met"). Here the memory filling calls `pause` every
//! [`BLOCKS_PER_SLICE`] blocks (~0.1 ms), where the hashing pool yields its core. The
//! output is bit for bit the crate's (tests compare them over random inputs); Stint's
//! `core::authn::password` still uses the crate for the PHC format and for any stored hash
//! this one does not cover (other algorithms, versions, output lengths).
//!
//! Scope: argon2id, version 0x13, a 32-byte tag, no secret key or associated data: what
//! Stint writes.

use std::cell::RefCell;
use std::ops::ControlFlow;

use blake2::digest::Digest;
use blake2::{Blake2b256, Blake2b512};
use zeroize::Zeroize;

/// Cost parameters, as in a PHC string's `m`, `t` and `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// Inputs the hash refuses; the words name what was wrong, never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Parameters the argon2 crate refuses too, with its reason.
    Params(String),
    /// The salt is not 8 to 64 bytes.
    SaltLength,
    /// The password is longer than 2^32 - 1 bytes.
    PasswordTooLong,
    /// The memory the parameters ask for could not be allocated.
    OutOfMemory,
    /// `pause` asked to stop (the caller has gone): no tag.
    Stopped,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Params(why) => write!(f, "invalid argon2 parameters: {why}"),
            Error::SaltLength => f.write_str("salt must be 8 to 64 bytes"),
            Error::PasswordTooLong => f.write_str("password is too long"),
            Error::OutOfMemory => f.write_str("not enough memory for the argon2 parameters"),
            Error::Stopped => f.write_str("hash stopped: its caller has gone"),
        }
    }
}

impl std::error::Error for Error {}

/// Blocks filled between two pauses. One block is ~0.5 µs here, so a slice is ~0.1 ms.
pub const BLOCKS_PER_SLICE: usize = 256;

/// The tag length [`hash`] produces (the crate's default, and every PHC string we write).
pub const TAG_LEN: usize = 32;

const SYNC_POINTS: usize = 4;
const WORDS: usize = 128;
const ADDRESSES_IN_BLOCK: usize = WORDS;
const ARGON2ID: u32 = 2;
const VERSION: u32 = 0x13;

/// One 1 KiB memory block, as 128 little-endian words.
#[derive(Clone, Copy)]
struct Block([u64; WORDS]);

impl Block {
    const ZERO: Block = Block([0; WORDS]);

    fn from_bytes(bytes: &[u8; 1024]) -> Self {
        let mut block = Self::ZERO;
        for (word, chunk) in block.0.iter_mut().zip(bytes.as_chunks::<8>().0) {
            *word = u64::from_le_bytes(*chunk);
        }
        block
    }

    fn to_bytes(self) -> [u8; 1024] {
        let mut bytes = [0u8; 1024];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    fn xor(mut self, other: &Block) -> Block {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a ^= b;
        }
        self
    }
}

#[inline(always)]
fn blamka(x: u64, y: u64) -> u64 {
    let low = u64::from(x as u32).wrapping_mul(u64::from(y as u32));
    x.wrapping_add(y).wrapping_add(low.wrapping_mul(2))
}

macro_rules! quarter {
    ($a:expr, $b:expr, $c:expr, $d:expr) => {
        $a = blamka($a, $b);
        $d = ($d ^ $a).rotate_right(32);
        $c = blamka($c, $d);
        $b = ($b ^ $c).rotate_right(24);
        $a = blamka($a, $b);
        $d = ($d ^ $a).rotate_right(16);
        $c = blamka($c, $d);
        $b = ($b ^ $c).rotate_right(63);
    };
}

macro_rules! permute {
    ($v0:expr, $v1:expr, $v2:expr, $v3:expr, $v4:expr, $v5:expr, $v6:expr, $v7:expr,
     $v8:expr, $v9:expr, $v10:expr, $v11:expr, $v12:expr, $v13:expr, $v14:expr, $v15:expr) => {
        quarter!($v0, $v4, $v8, $v12);
        quarter!($v1, $v5, $v9, $v13);
        quarter!($v2, $v6, $v10, $v14);
        quarter!($v3, $v7, $v11, $v15);
        quarter!($v0, $v5, $v10, $v15);
        quarter!($v1, $v6, $v11, $v12);
        quarter!($v2, $v7, $v8, $v13);
        quarter!($v3, $v4, $v9, $v14);
    };
}

/// The compression function G(X, Y) = P(X ⊕ Y) ⊕ X ⊕ Y (RFC 9106 §3.5).
#[inline(always)]
fn compress(x: &Block, y: &Block) -> Block {
    let r = x.xor(y);
    let mut q = r;
    for row in q.0.chunks_exact_mut(16) {
        #[rustfmt::skip]
        permute!(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
            row[8], row[9], row[10], row[11], row[12], row[13], row[14], row[15]
        );
    }
    for i in 0..8 {
        let c = i * 2;
        let w = &mut q.0;
        #[rustfmt::skip]
        permute!(
            w[c], w[c + 1], w[c + 16], w[c + 17], w[c + 32], w[c + 33], w[c + 48], w[c + 49],
            w[c + 64], w[c + 65], w[c + 80], w[c + 81], w[c + 96], w[c + 97], w[c + 112], w[c + 113]
        );
    }
    q.xor(&r)
}

/// H' of RFC 9106 §3.3 for a 1024-byte output (a memory block).
fn hash_to_block(parts: &[&[u8]]) -> Block {
    let mut out = [0u8; 1024];
    let mut hasher = Blake2b512::new();
    hasher.update(1024u32.to_le_bytes());
    for part in parts {
        hasher.update(part);
    }
    let mut last = hasher.finalize();
    out[..32].copy_from_slice(&last[..32]);
    // r = ceil(1024 / 32) - 2 = 30 hashes of 64 bytes, keeping 32 bytes of each but the last.
    for i in 1..30 {
        last = Blake2b512::digest(last);
        out[i * 32..i * 32 + 32].copy_from_slice(&last[..32]);
    }
    last = Blake2b512::digest(last);
    out[960..].copy_from_slice(&last);
    last.as_mut_slice().zeroize();
    let block = Block::from_bytes(&out);
    out.zeroize();
    block
}

/// H' for the 32-byte tag: one BLAKE2b-256 of the length and the input.
fn hash_to_tag(input: &[u8]) -> [u8; TAG_LEN] {
    let mut hasher = Blake2b256::new();
    hasher.update((TAG_LEN as u32).to_le_bytes());
    hasher.update(input);
    hasher.finalize().into()
}

/// The geometry the crate validates and derives from the parameters.
struct Geometry {
    lanes: usize,
    lane_length: usize,
    segment_length: usize,
    passes: usize,
}

impl Geometry {
    fn of(params: &Params) -> Result<Self, Error> {
        // The crate's checks, so both refuse the same parameters with the same words.
        let checked = argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| Error::Params(e.to_string()))?;
        let lanes = checked.p_cost() as usize;
        let lane_length = checked.block_count() / lanes;
        Ok(Self {
            lanes,
            lane_length,
            segment_length: lane_length / SYNC_POINTS,
            passes: checked.t_cost() as usize,
        })
    }

    fn block_count(&self) -> usize {
        self.lanes * self.lane_length
    }
}

/// Computes the 32-byte argon2id tag of `password` with `salt` and `params`, calling
/// `pause` after every [`BLOCKS_PER_SLICE`] blocks filled.
pub fn hash(
    password: &[u8],
    salt: &[u8],
    params: &Params,
    pause: &mut dyn FnMut() -> ControlFlow<()>,
) -> Result<[u8; TAG_LEN], Error> {
    hash_with(password, salt, params, pause, true)
}

/// [`hash`], with the SIMD dispatch optional (tests compare both code paths).
fn hash_with(
    password: &[u8],
    salt: &[u8],
    params: &Params,
    pause: &mut dyn FnMut() -> ControlFlow<()>,
    simd: bool,
) -> Result<[u8; TAG_LEN], Error> {
    let geometry = Geometry::of(params)?;
    if salt.len() < 8 || salt.len() > 64 {
        return Err(Error::SaltLength);
    }
    let password_len = u32::try_from(password.len()).map_err(|_| Error::PasswordTooLong)?;

    let mut initial = Blake2b512::new();
    for field in [
        params.parallelism,
        TAG_LEN as u32,
        params.memory_kib,
        params.iterations,
        VERSION,
        ARGON2ID,
        password_len,
    ] {
        initial.update(field.to_le_bytes());
    }
    initial.update(password);
    initial.update((salt.len() as u32).to_le_bytes());
    initial.update(salt);
    initial.update(0u32.to_le_bytes()); // no secret key
    initial.update(0u32.to_le_bytes()); // no associated data
    let mut h0 = initial.finalize();

    let mut held = Memory::take(geometry.block_count(), pause)?;
    let memory = &mut held.0;
    for lane in 0..geometry.lanes {
        for column in 0..2u32 {
            memory[lane * geometry.lane_length + column as usize] =
                hash_to_block(&[&h0, &column.to_le_bytes(), &(lane as u32).to_le_bytes()]);
        }
    }
    h0.as_mut_slice().zeroize();

    let filled = if simd {
        pulp::Arch::new().dispatch(Fill {
            memory,
            geometry: &geometry,
            pause,
        })
    } else {
        fill(memory, &geometry, pause)
    };
    if filled.is_break() {
        held.release(pause);
        return Err(Error::Stopped);
    }

    let mut last = memory[geometry.lane_length - 1];
    for lane in 1..geometry.lanes {
        last = last.xor(&memory[lane * geometry.lane_length + geometry.lane_length - 1]);
    }
    let mut last_bytes = last.to_bytes();
    let tag = hash_to_tag(&last_bytes);
    last_bytes.zeroize();
    last.0.zeroize();
    held.release(pause);
    Ok(tag)
}

/// Blocks zeroed or freed between two pauses: ~0.1–0.2 ms of memory traffic.
const BLOCKS_PER_MEMORY_SLICE: usize = 1024;

/// Memory a thread keeps between hashes, all zeros: up to 64 MiB (the default cost is
/// 19 MiB). Reusing it saves each hash the allocation, the zero fill and the page faults
/// of fresh memory (~3 ms of 20 at the default cost); a larger memory is freed after use.
const KEEP_AT_MOST_BLOCKS: usize = 64 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The memory blocks of one hash. Dropped without [`Memory::release`] (a panic in
/// `pause`), they are zeroed then.
struct Memory(Vec<Block>);

impl Memory {
    /// `blocks` zeroed blocks: this thread's spare memory, grown a slice at a time where
    /// it is short, or [`Error::OutOfMemory`], never an abort.
    fn take(blocks: usize, pause: &mut dyn FnMut() -> ControlFlow<()>) -> Result<Self, Error> {
        let mut memory = Memory(SPARE.with(|spare| std::mem::take(&mut *spare.borrow_mut())));
        // Every block of the spare is zero, so any prefix of it will do.
        memory.0.truncate(blocks);
        let short = blocks - memory.0.len();
        memory
            .0
            .try_reserve_exact(short)
            .map_err(|_| Error::OutOfMemory)?;
        while memory.0.len() < blocks {
            let slice = BLOCKS_PER_MEMORY_SLICE.min(blocks - memory.0.len());
            memory.0.extend(std::iter::repeat_n(Block::ZERO, slice));
            if pause().is_break() {
                memory.release(&mut || ControlFlow::Continue(()));
                return Err(Error::Stopped);
            }
        }
        Ok(memory)
    }

    /// Zeroes the memory a slice at a time, then keeps it as this thread's spare (or
    /// frees it, if larger than [`KEEP_AT_MOST_BLOCKS`]).
    fn release(mut self, pause: &mut dyn FnMut() -> ControlFlow<()>) {
        for chunk in self.0.chunks_mut(BLOCKS_PER_MEMORY_SLICE) {
            for block in chunk {
                block.0.zeroize();
            }
            // Stopping or not, the memory is wiped whole.
            let _ = pause();
        }
        let wiped = std::mem::take(&mut self.0);
        if wiped.capacity() <= KEEP_AT_MOST_BLOCKS {
            SPARE.with(|spare| *spare.borrow_mut() = wiped);
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        for block in self.0.iter_mut() {
            block.0.zeroize();
        }
    }
}

/// [`fill`] compiled for the best SIMD the CPU has (AVX2 on most x86-64), as the `argon2`
/// crate does for its own: ~1.5× faster than baseline SSE2 code here. `pulp` is the safe
/// way to enter code built for a CPU feature under `forbid(unsafe_code)`.
struct Fill<'a> {
    memory: &'a mut [Block],
    geometry: &'a Geometry,
    pause: &'a mut dyn FnMut() -> ControlFlow<()>,
}

impl pulp::WithSimd for Fill<'_> {
    type Output = ControlFlow<()>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> ControlFlow<()> {
        fill(self.memory, self.geometry, self.pause)
    }
}

/// The passes over memory (RFC 9106 §3.4), argon2id's indexing: data-independent in the
/// first half of the first pass, data-dependent after.
#[inline(always)]
fn fill(
    memory: &mut [Block],
    geometry: &Geometry,
    pause: &mut dyn FnMut() -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Geometry {
        lanes,
        lane_length,
        segment_length,
        passes,
    } = *geometry;
    let mut since_pause = 0usize;
    for pass in 0..passes {
        for slice in 0..SYNC_POINTS {
            for lane in 0..lanes {
                let independent = pass == 0 && slice < SYNC_POINTS / 2;
                let mut input = Block::ZERO;
                let mut addresses = Block::ZERO;
                if independent {
                    input.0[..6].copy_from_slice(&[
                        pass as u64,
                        lane as u64,
                        slice as u64,
                        geometry.block_count() as u64,
                        passes as u64,
                        u64::from(ARGON2ID),
                    ]);
                }
                let first = if pass == 0 && slice == 0 {
                    if independent {
                        next_addresses(&mut addresses, &mut input);
                    }
                    2
                } else {
                    0
                };
                let segment_start = lane * lane_length + slice * segment_length;
                for index in first..segment_length {
                    let current = segment_start + index;
                    // A lane's first block follows its last (from the second pass on).
                    let previous = if slice == 0 && index == 0 {
                        current + lane_length - 1
                    } else {
                        current - 1
                    };
                    let rand = if independent {
                        let at = index % ADDRESSES_IN_BLOCK;
                        if at == 0 {
                            next_addresses(&mut addresses, &mut input);
                        }
                        addresses.0[at]
                    } else {
                        memory[previous].0[0]
                    };
                    let reference = reference_index(geometry, pass, slice, lane, index, rand);
                    let block = compress(&memory[previous], &memory[reference]);
                    if pass == 0 {
                        memory[current] = block;
                    } else {
                        memory[current] = memory[current].xor(&block);
                    }
                    since_pause += 1;
                    if since_pause == BLOCKS_PER_SLICE {
                        since_pause = 0;
                        if pause().is_break() {
                            input.0.zeroize();
                            addresses.0.zeroize();
                            return ControlFlow::Break(());
                        }
                    }
                }
                input.0.zeroize();
                addresses.0.zeroize();
            }
        }
    }
    ControlFlow::Continue(())
}

/// The next block of pseudo-random addresses: G(0, G(0, input)) after bumping the counter.
#[inline(always)]
fn next_addresses(addresses: &mut Block, input: &mut Block) {
    input.0[6] += 1;
    *addresses = compress(&compress(&Block::ZERO, input), &Block::ZERO);
}

/// Which block the block at `index` of this segment mixes in (RFC 9106 §3.4.1.2).
#[inline(always)]
fn reference_index(
    geometry: &Geometry,
    pass: usize,
    slice: usize,
    lane: usize,
    index: usize,
    rand: u64,
) -> usize {
    let Geometry {
        lanes,
        lane_length,
        segment_length,
        ..
    } = *geometry;
    // The first segment of the first pass has only its own lane to mix in.
    let ref_lane = if pass == 0 && slice == 0 {
        lane
    } else {
        (rand >> 32) as usize % lanes
    };
    let area = if pass == 0 {
        if slice == 0 {
            index - 1
        } else if ref_lane == lane {
            slice * segment_length + index - 1
        } else {
            slice * segment_length - usize::from(index == 0)
        }
    } else if ref_lane == lane {
        lane_length - segment_length + index - 1
    } else {
        lane_length - segment_length - usize::from(index == 0)
    };
    let low = rand & 0xFFFF_FFFF;
    let squared = (low * low) >> 32;
    let relative = area - 1 - ((area as u64 * squared) >> 32) as usize;
    let start = if pass != 0 && slice != SYNC_POINTS - 1 {
        (slice + 1) * segment_length
    } else {
        0
    };
    ref_lane * lane_length + (start + relative) % lane_length
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHEAP: Params = Params {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
    const OWASP: Params = Params {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    fn crate_tag(password: &[u8], salt: &[u8], params: &Params) -> [u8; TAG_LEN] {
        let checked = argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(TAG_LEN),
        )
        .unwrap();
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, checked);
        let mut out = [0u8; TAG_LEN];
        hasher.hash_password_into(password, salt, &mut out).unwrap();
        out
    }

    /// RFC 9106 §5.3 has a secret and associated data, which we never use; its inputs
    /// without them, checked against the crate and pinned here.
    #[test]
    fn matches_the_crate_on_fixed_inputs() {
        let cases: &[(&[u8], &[u8], Params)] = &[
            (
                &[1; 32],
                &[2; 16],
                Params {
                    memory_kib: 32,
                    iterations: 3,
                    parallelism: 4,
                },
            ),
            (b"", b"saltsalt", CHEAP),
            (
                b"password",
                b"somesaltsomesalt",
                Params {
                    memory_kib: 64,
                    iterations: 2,
                    parallelism: 1,
                },
            ),
            (b"correct horse", b"0123456789abcdef", OWASP),
        ];
        for (password, salt, params) in cases {
            let ours = hash(password, salt, params, &mut || ControlFlow::Continue(())).unwrap();
            assert_eq!(ours, crate_tag(password, salt, params), "{params:?}");
            let plain = hash_with(
                password,
                salt,
                params,
                &mut || ControlFlow::Continue(()),
                false,
            )
            .unwrap();
            assert_eq!(plain, ours, "without SIMD: {params:?}");
        }
    }

    #[test]
    fn pauses_once_per_slice_of_blocks() {
        let params = Params {
            memory_kib: 1024,
            iterations: 2,
            parallelism: 1,
        };
        let (result, pauses) = hash_on_a_fresh_thread(params, 0, || {});
        assert!(result.is_ok());
        // One pause for taking the 1024 blocks, then one per slice of the two passes
        // (the first two blocks of the first pass are made by H'), one for wiping them.
        assert_eq!(pauses, 1 + (2 * 1024 - 2) / BLOCKS_PER_SLICE + 1);
    }

    /// Runs `hash` on a thread of its own (no spare memory yet), stopping at pause
    /// `stop_at` (0: never), then `then` on that thread; the result and the pauses seen.
    fn hash_on_a_fresh_thread(
        params: Params,
        stop_at: usize,
        then: impl FnOnce() + Send + 'static,
    ) -> (Result<[u8; TAG_LEN], Error>, usize) {
        std::thread::spawn(move || {
            let mut seen = 0usize;
            let result = hash(b"pw", b"saltsalt", &params, &mut || {
                seen += 1;
                if seen == stop_at {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            then();
            (result, seen)
        })
        .join()
        .unwrap()
    }

    /// A `pause` that asks to stop, at any of a hash's pauses (taking memory, filling
    /// it), ends it with no tag, and the thread's next hash is still right.
    #[test]
    fn a_stop_at_any_pause_ends_the_hash() {
        let params = Params {
            memory_kib: 2048,
            iterations: 1,
            parallelism: 1,
        };
        let (whole, total) = hash_on_a_fresh_thread(params, 0, || {});
        let want = crate_tag(b"pw", b"saltsalt", &params);
        assert_eq!(whole, Ok(want));
        // The last pauses wipe the memory, after the tag is made: a stop there is ignored.
        let wipe = 2048 / BLOCKS_PER_MEMORY_SLICE;
        for stop_at in 1..=total - wipe {
            let next_hash = move || {
                let again = hash(b"pw", b"saltsalt", &params, &mut || {
                    ControlFlow::Continue(())
                });
                assert_eq!(again, Ok(want), "after a stop at pause {stop_at}");
            };
            let (result, _) = hash_on_a_fresh_thread(params, stop_at, next_hash);
            assert_eq!(result, Err(Error::Stopped), "stop at pause {stop_at}");
        }
    }

    /// A thread's spare memory is all zeros again after each hash, whatever sizes come:
    /// the same inputs give the crate's tag whether the memory is fresh, reused, grown
    /// or cut.
    #[test]
    fn reused_memory_gives_the_same_tags() {
        for memory_kib in [64, 512, 128, 512, 2048, 8] {
            let params = Params {
                memory_kib,
                iterations: 2,
                parallelism: 1,
            };
            let ours = hash(b"pw", b"saltsalt", &params, &mut || {
                ControlFlow::Continue(())
            });
            assert_eq!(
                ours,
                Ok(crate_tag(b"pw", b"saltsalt", &params)),
                "{memory_kib}"
            );
        }
        let spare = SPARE.with(|spare| spare.borrow().clone());
        assert_eq!(spare.len(), 8);
        assert!(
            spare
                .iter()
                .all(|block| block.0.iter().all(|&word| word == 0))
        );
    }

    #[test]
    fn refuses_what_the_crate_refuses() {
        let bad = Params {
            memory_kib: 1,
            iterations: 1,
            parallelism: 1,
        };
        assert!(matches!(
            hash(b"x", b"saltsalt", &bad, &mut || ControlFlow::Continue(())),
            Err(Error::Params(_))
        ));
        let params = CHEAP;
        for salt in [&b"short"[..], &[0u8; 65][..]] {
            assert_eq!(
                hash(b"x", salt, &params, &mut || ControlFlow::Continue(())),
                Err(Error::SaltLength)
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn equals_the_crate(
            password in proptest::collection::vec(any::<u8>(), 0..80),
            salt in proptest::collection::vec(any::<u8>(), 8..40),
            lanes in 1u32..5,
            extra_kib in 0u32..64,
            iterations in 1u32..4,
        ) {
            let params = Params {
                memory_kib: 8 * lanes + extra_kib,
                iterations,
                parallelism: lanes,
            };
            prop_assert_eq!(
                hash(&password, &salt, &params, &mut || ControlFlow::Continue(())).unwrap(),
                crate_tag(&password, &salt, &params)
            );
        }
    }
}
