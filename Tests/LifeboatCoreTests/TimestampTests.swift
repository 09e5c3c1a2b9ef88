import LifeboatCore
import Testing

@Suite("Timestamp: RFC 3339")
struct TimestampTests {
    @Test("formatting known instants")
    func format() {
        #expect(Timestamp(seconds: 0).rfc3339 == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp(seconds: 1_790_035_200).rfc3339 == "2026-09-22T00:00:00.000Z")
        #expect(Timestamp(nanoseconds: 1_796_009_131_123_456_789).rfc3339 == "2026-11-30T03:25:31.123Z")
        #expect(Timestamp(seconds: 951_782_400).rfc3339 == "2000-02-29T00:00:00.000Z")  // leap day
        #expect(Timestamp(seconds: 4_102_444_799).rfc3339 == "2099-12-31T23:59:59.000Z")
        #expect(Timestamp(nanoseconds: -1).rfc3339 == "1969-12-31T23:59:59.999Z")
        #expect(Timestamp(seconds: -86400 * 365).rfc3339 == "1969-01-01T00:00:00.000Z")
        #expect(Timestamp(seconds: 42).description == Timestamp(seconds: 42).rfc3339)
    }

    @Test("parsing forms RFC 3339 allows")
    func parse() {
        let t = Timestamp(seconds: 1_796_009_131)  // 2026-11-30T03:25:31Z
        #expect(Timestamp(rfc3339: "2026-11-30T03:25:31Z") == t)
        #expect(Timestamp(rfc3339: "2026-11-30t03:25:31z") == t)
        #expect(Timestamp(rfc3339: "2026-11-30 03:25:31Z") == t)
        #expect(Timestamp(rfc3339: "2026-11-30T05:25:31+02:00") == t)
        #expect(Timestamp(rfc3339: "2026-11-29T22:55:31-04:30") == t)
        #expect(Timestamp(rfc3339: "2026-11-30T03:25:31+00:00") == t)
        #expect(Timestamp(rfc3339: "2026-11-30T03:25:31.5Z") == Timestamp(nanoseconds: t.nanoseconds + 500_000_000))
        #expect(Timestamp(rfc3339: "2026-11-30T03:25:31.000000001Z") == Timestamp(nanoseconds: t.nanoseconds + 1))
        // Digits beyond nanoseconds are ignored, not rounded.
        #expect(Timestamp(rfc3339: "2026-11-30T03:25:31.1234567899Z") == Timestamp(nanoseconds: t.nanoseconds + 123_456_789))
        #expect(Timestamp(rfc3339: "1970-01-01T00:00:00Z") == Timestamp(seconds: 0))
        #expect(Timestamp(rfc3339: "1969-12-31T23:59:59.999Z") == Timestamp(nanoseconds: -1_000_000))
        // Across a day and a year boundary through the offset.
        #expect(Timestamp(rfc3339: "2027-01-01T01:00:00+02:00") == Timestamp(rfc3339: "2026-12-31T23:00:00Z"))
    }

    @Test(
        "malformed text is rejected",
        arguments: [
            "", "latest", "2026-11-29", "2026-11-29T03:25:31", "2026-11-29T03:25Z", "2026-11-29T03:25:31.Z",
            "2026-11-29T03:25:31ZZ", "2026-11-29T03:25:31+0200", "2026-11-29T03:25:31+02", "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z", "2026-01-00T00:00:00Z", "2026-01-32T00:00:00Z", "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z", "2026/01/01T00:00:00Z", "2026-01-01X00:00:00Z", "２０２６-01-01T00:00:00Z",
            " 2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z ",
        ]
    )
    func rejects(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test(
        "dates that do not exist in the calendar are rejected",
        arguments: ["2026-02-29T00:00:00Z", "2026-02-30T00:00:00Z", "2026-04-31T00:00:00Z", "2100-02-29T00:00:00Z"]
    )
    func rejectsImpossibleDates(text: String) {
        #expect(Timestamp(rfc3339: text) == nil, "\(text) parsed as \(String(describing: Timestamp(rfc3339: text)))")
    }

    @Test("leap days that exist are accepted")
    func leapDays() {
        #expect(Timestamp(rfc3339: "2028-02-29T12:00:00Z") != nil)
        #expect(Timestamp(rfc3339: "2000-02-29T00:00:00Z") == Timestamp(seconds: 951_782_400))
    }

    @Test("format then parse gives the instant back, truncated to the millisecond")
    func roundTrip() {
        var state: UInt64 = 0x1234_5678
        var samples: [Int64] = [0, -1, 1, 999_999, 1_000_000, -1_000_000, -1_000_001, 951_782_400_000_000_000]
        for _ in 0..<2000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            // Between 1900 and 2046.
            samples.append(Int64(bitPattern: state >> 2) % 7_258_118_400_000_000_000 - 2_208_988_800_000_000_000)
        }
        for ns in samples {
            let t = Timestamp(nanoseconds: ns)
            let text = t.rfc3339
            let parsed = Timestamp(rfc3339: text)
            let truncated = ns >= 0 ? ns / 1_000_000 * 1_000_000 : -((-ns + 999_999) / 1_000_000 * 1_000_000)
            #expect(parsed == Timestamp(nanoseconds: truncated), "\(ns) -> \(text)")
            #expect(parsed?.rfc3339 == text)
        }
    }

    @Test("seconds round toward the past, order follows nanoseconds")
    func secondsAndOrder() {
        #expect(Timestamp(nanoseconds: 1_999_999_999).seconds == 1)
        #expect(Timestamp(nanoseconds: -1).seconds == -1)
        #expect(Timestamp(nanoseconds: -1_000_000_000).seconds == -1)
        #expect(Timestamp(nanoseconds: -1_000_000_001).seconds == -2)
        #expect(Timestamp(seconds: 5) < Timestamp(nanoseconds: 5_000_000_001))
        #expect(Timestamp(seconds: 5) == Timestamp(nanoseconds: 5_000_000_000))
    }

    @Test("a manual clock moves only when told")
    func manualClock() {
        let clock = ManualWallClock(Timestamp(seconds: 100))
        #expect(clock.now() == Timestamp(seconds: 100))
        #expect(clock.now() == Timestamp(seconds: 100))
        clock.advance(seconds: 3600)
        #expect(clock.now() == Timestamp(seconds: 3700))
        clock.set(Timestamp(seconds: 7))
        #expect(clock.now() == Timestamp(seconds: 7))
    }
}

@Suite("Timestamp resolution of written times")
struct TimestampResolutionTests {
    @Test("the span a written time covers follows its fraction digits")
    func resolution() {
        #expect(Timestamp.resolution(ofRFC3339: "2026-11-30T12:28:17Z") == 1_000_000_000)
        #expect(Timestamp.resolution(ofRFC3339: "2026-11-30T12:28:17.043Z") == 1_000_000)
        #expect(Timestamp.resolution(ofRFC3339: "2026-11-30T12:28:17.043210+01:00") == 1_000)
        #expect(Timestamp.resolution(ofRFC3339: "2026-11-30T12:28:17.123456789Z") == 1)
        #expect(Timestamp.resolution(ofRFC3339: "2026-11-30T12:28:17.1234567891Z") == 1)
    }
}
