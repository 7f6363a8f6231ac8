"""Golden values for src/hash.rs, computed independently in pure Python.

Run: python3 tests/reference/hash_golden.py
The numbers it prints are pinned in the unit tests of src/hash.rs. The
holdout split of `predict` and the samples of `predict` and `segment` depend
on these hashes: if they change, every user's split moves.
"""

M = (1 << 64) - 1


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def fnv1a(data: bytes):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M
    return h


def key_hash_int(v, seed):
    return splitmix64((v & M) ^ splitmix64(seed))


def key_hash_str(s, seed):
    return splitmix64(fnv1a(s.encode()) ^ splitmix64(seed))


def salted(seed, purpose):
    return splitmix64(seed ^ fnv1a(purpose.encode()))


if __name__ == "__main__":
    for z in [0, 1, 42, 2**64 - 1]:
        print(f"splitmix64({z}) = {splitmix64(z)}")
    for s in [b"", b"a", b"customer_id", "München".encode()]:
        print(f"fnv1a({s!r}) = {fnv1a(s)}")
    for v, seed in [(1, 42), (-1, 42), (123456789, 7)]:
        print(f"key_hash_int({v}, {seed}) = {key_hash_int(v, seed)}")
    print(f"salted(42, 'fit_sample') = {salted(42, 'fit_sample')}")
    for s, seed in [("C-1", 42), ("", 42)]:
        print(f"key_hash_str({s!r}, {seed}) = {key_hash_str(s, seed)}")
