# Counts primes below a bound with a simple sieve.
N = 200_000
sieve = bytearray([1]) * N
sieve[0:2] = b"\x00\x00"
for i in range(2, int(N ** 0.5) + 1):
    if sieve[i]:
        sieve[i * i::i] = bytes(len(range(i * i, N, i)))
count = sum(sieve)
print(f"{count} primes below {N}")
result = count
