"""Input C of the oracle: a small access log of edge cases, written byte for byte.

Each entry is (verdict, line): "ok" when the rules of examples/log_analytics/access_log.rs
accept the line, "bad" when it must become a dead letter. The verdicts are written by hand from
those rules; the oracle checks that its SQL grammar agrees with them (a test of the oracle, not
of Weir), and then compares Weir's dead-letter count and results with what the SQL computes.
Nothing here is an expected result: the SQL derives every number from the raw bytes.

The log is mostly in time order with a few records disordered beyond the 5 s watermark bound
(the "late" block), so the oracle's handling of possibly-late records is exercised too.

Left out: timestamps before 1970 or after 9999 (the oracle's time arithmetic stays in that
range) and the malformed offsets and years that once crashed the parser; those are covered by
the parser's and log_analytics' unit tests.
"""

def t(day_time: str, offset: str = "+0000") -> str:
    """The bracketed time field."""
    return f"[{day_time} {offset}]"


def line(client: str, when: str, request: str, status: str, size: str, tail: str = "") -> str:
    return f'{client} - - {when} "{request}" {status} {size}{tail}'


def minute_0() -> list[tuple[str, bytes]]:
    T = lambda s: t(f"01/Mar/2024:10:00:{s}")  # noqa: E731
    ok = [
        # The first parseable line has a request time: percentiles are of request times.
        line("10.0.0.1", T("00"), "GET /a?x=1 HTTP/1.1", "200", "100", ' "-" "ua" 0.010'),
        line("10.0.0.2", T("01"), "POST /login HTTP/1.1", "302", "-").replace("- - [", "- frank ["),
        # Escaped quotes in the request, referer and user agent (a trailing escaped backslash).
        line("10.0.0.3", T("02"), r"GET /q\"uote HTTP/1.1", "200", "5", r' "a \" b" "u\\" 0.5'),
        # UTC offsets: +0130, +01:30, -0500 and Z all name 10:00:0x UTC.
        line("10.0.0.4", t("01/Mar/2024:11:30:03", "+0130"), "GET /tz HTTP/1.1", "200", "7", ' "-" "-" 0.020'),
        line("10.0.0.4", t("01/Mar/2024:11:30:03", "+01:30"), "GET /tz HTTP/1.1", "200", "7", ' "-" "-" 0.030'),
        line("10.0.0.5", t("01/Mar/2024:05:00:04", "-0500"), "GET /tz HTTP/1.1", "404", "9", ' "-" "-" 1e-3'),
        line("10.0.0.5", t("01/Mar/2024:10:00:05", "Z"), "GET /z HTTP/1.1", "200", "1"),
        # Date separators may be ':' or '/' alike; Feb 30 of a leap year is Mar 1.
        line("10.0.0.6", "[01:Mar:2024/10:00:06 +0000]", "GET /sep HTTP/1.1", "200", "1", ' "r" "u" .5'),
        line("10.0.0.6", T("07").replace("01/Mar", "30/Feb"), "GET /feb30 HTTP/1.1", "200", "1", ' "r" "u" 5.'),
        # '+' before numbers, leading zeros, one-digit fields.
        line("10.0.0.7", T("08"), "GET /plus HTTP/1.1", "+200", "+12", ' "r" "u" +0.25'),
        line("10.0.0.7", "[1/Mar/2024:10:0:9 +0000]", "GET /lead HTTP/1.1", "0404", "0012", ' "r" "u" 0.0'),
        # Leading spaces; no space after a closing quote.
        "   " + line("10.0.0.8", T("10"), "GET /leading-spaces HTTP/1.1", "200", "3"),
        '10.0.0.8 - - ' + T("11") + ' "GET /nospace HTTP/1.1"200 3 "r""u"0.040',
        # Trailing whitespace: space + tab after the time; a no-break space after the bytes.
        line("10.0.0.9", T("12"), "GET /trail HTTP/1.1", "200", "3", ' "r" "u" 0.1 \t'),
        line("10.0.0.9", T("13"), "GET /nbsp HTTP/1.1", "200", "3", " \u00a0"),
        # CRLF line end (the \r is dropped).
        line("10.0.0.10", T("14"), "GET /crlf HTTP/1.1", "200", "3", ' "r" "u" 0.060') + "\r",
        # Runs of spaces inside the request; a target that is only a query (path "").
        line("10.0.0.10", T("15"), "GET  /spaces   HTTP/1.0 ", "200", "3"),
        line("10.0.0.11", T("16"), "GET ?only-query HTTP/1.1", "200", "3"),
        # A tab is not a separator.
        line("a\tb", T("17"), "GET /tab\tin HTTP/1.1", "200", "3"),
        # "-0" seconds is accepted (>= 0); common format + request time without referer/UA.
        line("10.0.0.12", T("19"), "GET /neg-zero HTTP/1.1", "200", "3", ' "r" "u" -0'),
        line("10.0.0.13", T("20"), "GET /common-time HTTP/1.1", "200", "3", " 0.300"),
        line("10.0.0.13", T("21"), "GET /s599 HTTP/1.1", "599", "0"),
        line("10.0.0.13", T("22"), "OPTIONS * HTTP/1.1", "100", "0"),
    ]
    # Many paths with one request each: the top 10 is decided by path (ties by path).
    for i, p in enumerate(["/Z", "/b", "/B", "/", "/a/", "/\u00e9", "/~", "/0", "/a", "/aa", "/ab", "/a b"]):
        p = p.replace(" ", "%20")
        ok.append(line(f"10.0.1.{i}", T(f"{30 + i:02d}"), f"GET {p} HTTP/1.1", "200", str(10 * i), f' "-" "-" 0.{i:03d}'))
    # Clients tied on requests: ranks by client, bytewise ("10.0.0.10" < "10.0.0.9").
    for i, c in enumerate(["10.0.0.9", "10.0.0.10", "10.0.0.99", "10.0.0.100"]):
        ok.append(line(c, T(f"{50 + i:02d}"), "GET /a HTTP/1.1", "200", "1", f' "-" "-" 0.{i + 1:03d}'))
    entries: list[tuple[str, bytes]] = [("ok", s.encode()) for s in ok]
    # Invalid UTF-8 in the path: replaced by U+FFFD, the line is kept.
    entries.insert(20, ("ok", line("10.0.0.12", T("18"), "GET /bad@@ HTTP/1.1", "200", "3").encode().replace(b"@@", b"\xff\xfe")))

    base = "h - - " + T("59")
    bad = [
        "",  # blank
        "garbage",
        base + ' "-" 400 0',
        base + ' "GET / FTP/1.1" 200 0',
        base + ' "GET / HTTP/1.1 x" 200 0',
        'h - - [01/Foo/2024:10:00:59 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/mar/2024:10:00:59 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:24:00:59 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:60:59 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:61 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [00/Mar/2024:10:00:59 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [32/Mar/2024:10:00:59 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59 +000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59 +00000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59 0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59 +00:0a] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59 z] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59  +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024 10:00:59 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59:00 +0000] "GET / HTTP/1.1" 200 0',
        'h - - [01/Mar/2024:10:00:59 +0000 "GET / HTTP/1.1" 200 0',
        'h - -[01/Mar/2024:10:00:59 +0000] "GET / HTTP/1.1" 200 0',
        base + '\t"GET / HTTP/1.1" 200 0',
        base + ' "GET / HTTP/1.1 200 0',
        base + ' "GET / HTTP/1.1" 600 0',
        base + ' "GET / HTTP/1.1" 099 0',
        base + ' "GET / HTTP/1.1" 2OO 0',
        base + ' "GET / HTTP/1.1" -200 0',
        base + ' "GET / HTTP/1.1" ++200 0',
        base + ' "GET / HTTP/1.1" 65736 0',
        base + ' "GET / HTTP/1.1" 200',
        base + ' "GET / HTTP/1.1" 200 x',
        base + ' "GET / HTTP/1.1" 200 -5',
        base + ' "GET / HTTP/1.1" 200 1.5',
        base + ' "GET / HTTP/1.1" 200 18446744073709551616',
        base + ' "GET / HTTP/1.1" 200 5\t0.1',
    ]
    entries += [("bad", s.encode()) for s in bad]
    # Not errors: HTTP/0.9 (no protocol word), any HTTP token as method, and whatever follows
    # the bytes or the user agent that is not a request time (`digits.digits`) is ignored:
    # real configurations append headers, upstream times, %D microseconds.
    trailing = [
        base + ' "GET /" 400 0',
        base + ' "get / HTTP/1.1" 200 0',
        base + ' "GET2 / HTTP/1.1" 200 0',
        base + ' "GET / HTTP/1.1" 200 5 slow',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" inf',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" NaN',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" -1',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" 1e400',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" 0.1 extra',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" x',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" "x"',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u" \t0.1',
        base + ' "GET / HTTP/1.1" 200 5 "r"',
        base + ' "GET / HTTP/1.1" 200 5 \t"r" "u"',
        base + ' "GET / HTTP/1.1" 200 5 "r" "u',
        base + ' "GET / HTTP/1.1" 200 5 "-" "u" "198.51.100.4, 203.0.113.7"',
        base + ' "GET / HTTP/1.1" 200 5 "-" "u" 0.250 "-" "host"',
        base + ' "GET / HTTP/1.1" 200 5 "-" "u" 1234',
        base + ' "M-SEARCH * HTTP/1.1" 200 5 "-" "u" 0.002 0.001 .',
        base + r' "GET /q\"x\\ HTTP/1.1" 200 5 "-" "u\"a" 0.004',
    ]
    entries += [("ok", s.encode()) for s in trailing]
    return entries


def later_minutes() -> list[tuple[str, bytes]]:
    out: list[str] = []

    def add(client: str, hms: str, path: str, status: int, time_s: str | None = "0.050") -> None:
        tail = f' "-" "-" {time_s}' if time_s is not None else ""
        out.append(line(client, t(f"01/Mar/2024:{hms}"), f"GET {path} HTTP/1.1", str(status), "200", tail))

    # 10:00:60 is a leap second: 10:01:00.
    out.append(line("10.0.2.1", t("01/Mar/2024:10:00:60"), "GET /leap HTTP/1.1", "200", "1"))
    # 10:01: 2 of 10 are 5xx (alert); /no-time has no request time at all (no percentiles).
    for i in range(10):
        add(f"10.0.2.{i % 3}", f"10:01:{5 * i + 1:02d}", "/no-time" if i < 3 else "/x", 503 if i in (4, 7) else 200,
            None if i < 3 else f"0.{i:03d}")
    # 10:02: 1 of 20 is 5xx, exactly the threshold (no alert).
    for i in range(20):
        add(f"10.0.3.{i % 4}", f"10:02:{2 * i + 1:02d}", f"/y{i % 3}", 500 if i == 7 else 200)
    # 10:03 .. 10:05.
    for i in range(6):
        add("10.0.4.1", f"10:03:{10 * i:02d}", "/m3", 200)
    for i in range(6):
        add("10.0.4.2", f"10:04:{10 * i:02d}", "/m4", 404)
    add("10.0.4.3", "10:05:00", "/m5", 200)
    # Late block: 10:03:30 arrives after 10:05:00 (its minute may have closed: the oracle
    # leaves minute 10:03 and the 5-minute windows ending by 10:04 out of the comparison).
    add("10.0.4.1", "10:03:30", "/m3", 200)
    add("10.0.4.3", "10:05:10", "/m5", 200)
    # Exactly 5 s behind the newest record: never late.
    add("10.0.4.4", "10:05:05", "/m5", 200)
    # 6 s behind, in a minute that is still open: not late either.
    add("10.0.4.4", "10:05:04", "/m5", 200)
    for i in range(5):
        add("10.0.4.5", f"10:06:{10 * i:02d}", "/m6", 200)
    add("10.0.4.6", "10:07:00", "/m7", 200)
    # Sessions of 10.0.5.1: 10:08:00, +30 min exactly (same session), +30 min 1 s (a new one).
    add("10.0.5.1", "10:08:00", "/s", 200)
    add("10.0.5.2", "10:09:00", "/s", 200)
    add("10.0.5.1", "10:38:00", "/s", 200)
    add("10.0.5.2", "10:38:30", "/s", 200)
    add("10.0.5.1", "11:08:01", "/s", 200)
    # Very late: 10:07:30, an hour behind. The watermark follows whole batches of a partition,
    # and a partition's first poll (up to 1 MiB) is cut into batches before other partitions
    # are read, so it comes after more than 1 MiB of lines of its client (hence of its
    # partition) and after records of many clients, so that every partition has most likely
    # moved on: Weir then counts it late (likely, not certain: partitions are read in parallel).
    for i in range(16):
        add(f"10.0.6.{i}", f"11:08:{41 + i:02d}", "/n", 200)
    for i in range(12_000):
        s = 60 * 60 + 9 * 60 + i // 100
        add("10.0.4.6", f"{10 + s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}", f"/f{i % 13}", 200)
    add("10.0.4.6", "10:07:30", "/m7", 200)
    return [("ok", s.encode()) for s in out]


def entries() -> list[tuple[str, bytes]]:
    return minute_0() + later_minutes()


def write(path: str) -> list[str]:
    """Writes the log (every line ends with \\n) and returns the verdicts, line by line."""
    es = entries()
    with open(path, "wb") as f:
        for _, raw in es:
            f.write(raw + b"\n")
    return [v for v, _ in es]
