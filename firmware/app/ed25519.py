# Ed25519 signature verification (RFC 8032, section 5.1.7) in pure Python for the device.
#
# Only verification: the device never signs. Runs on MicroPython (bigints, no int.bit_length,
# no hashlib.sha512: app.sha512 brings one) and on CPython, where tests hold it against the
# RFC 8032 vectors and against `cryptography` for random keys and messages.
#
# Strict like RFC 8032 and OpenSSL: S must be below L; A must decode (canonical y < p, a point
# on the curve, no "negative zero"); the check is that [S]B - [k]A encodes to exactly R's bytes.
#
# Speed: points in extended coordinates (X:Y:Z:T) on the a = -1 twisted Edwards curve, and one
# pass of joint double-and-add over S and k two bits at a time (Shamir's trick with a 16-entry
# table), so about 254 doublings and 120 additions per verify; one field inversion at the end.
# Every field product is reduced at once with `% P`; sums and differences are left unreduced.
from app.sha512 import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555  # -121665/121666
D2 = 2 * D % P
SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
BASE = (_BX, _BY, 1, _BX * _BY % P)
IDENTITY = (0, 1, 1, 0)


def _add(p, q):
    # add-2008-hwcd-3: unified, also correct for p == q
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 % P * t2 % P
    d = 2 * z1 * z2 % P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p):
    # dbl-2008-hwcd with a = -1
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    s = x1 + y1
    e = h - s * s % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _neg(p):
    x, y, z, t = p
    return (P - x, y, z, P - t)


def _encode(p):
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def decode_point(s):
    """The point encoded by 32 bytes, or None when they encode none (RFC 8032 5.1.3)."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    yy = y * y % P
    u = (yy - 1) % P
    v = (D * yy + 1) % P
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vxx = v * x % P * x % P
    if vxx == u:
        pass
    elif vxx == (P - u) % P:
        x = x * SQRT_M1 % P
    else:
        return None
    if x == 0 and sign:
        return None
    if (x & 1) != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _double_scalar(s, pa, k, pb, feed=None):
    # [s]pa + [k]pb, two bits of each per step. The loop body is _double twice and _add once,
    # written out with local names: on MicroPython a call and a global lookup cost about as much
    # as a field multiplication, and this loop runs 128 times per signature. feed (the
    # watchdog's) is called every 16 steps: the loop is most of a verify, about 25 ms on the
    # unix port and 50-200x that on an ESP32.
    p = P
    d2 = D2
    pa2 = _double(pa)
    pb2 = _double(pb)
    row = (IDENTITY, pa, pa2, _add(pa2, pa))
    col = (IDENTITY, pb, pb2, _add(pb2, pb))
    table = [None] * 16
    for i in range(4):
        for j in range(4):
            if i == 0:
                q = col[j]
            elif j == 0:
                q = row[i]
            else:
                q = _add(row[i], col[j])
            # cached form for additions: (Y+X, Y-X, 2Z, 2dT)
            table[4 * i + j] = (q[1] + q[0], q[1] - q[0], 2 * q[2], q[3] * d2 % p)
    x, y, z, t = IDENTITY
    shift = 254
    while shift >= 0:
        # doubling (dbl-2008-hwcd, a = -1); T is not needed by the next doubling
        a = x * x % p
        b = y * y % p
        c = 2 * z * z % p
        h = a + b
        e = x + y
        e = h - e * e % p
        g = a - b
        f = c + g
        x = e * f % p
        y = g * h % p
        z = f * g % p
        # doubling again, now with T
        a = x * x % p
        b = y * y % p
        c = 2 * z * z % p
        h = a + b
        e = x + y
        e = h - e * e % p
        g = a - b
        f = c + g
        x = e * f % p
        y = g * h % p
        z = f * g % p
        t = e * h % p
        idx = (((s >> shift) & 3) << 2) | ((k >> shift) & 3)
        if idx:
            # add-2008-hwcd-3 with the table point in cached form
            yp, ym, z2, t2 = table[idx]
            a = (y - x) * ym % p
            b = (y + x) * yp % p
            c = t * t2 % p
            dd = z * z2 % p
            e = b - a
            f = dd - c
            g = dd + c
            h = b + a
            x = e * f % p
            y = g * h % p
            z = f * g % p
            t = e * h % p
        if feed is not None and not shift & 31:
            feed()
        shift -= 2
    return (x, y, z, t)


def verify(public, message, signature, feed=None):
    """True when `signature` (64 bytes) is public key `public`'s (32 bytes) on `message`;
    feed(), when given, is called now and then (a watchdog's)."""
    if len(signature) != 64 or len(public) != 32:
        return False
    a = decode_point(public)
    if a is None:
        return False
    r = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(sha512(bytes(r) + bytes(public) + bytes(message)), "little") % L
    if feed is not None:
        feed()
    return _encode(_double_scalar(s, BASE, k, _neg(a), feed)) == bytes(r)
