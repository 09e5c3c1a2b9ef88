import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: control settings")
struct ControlSettingsTests {
    @Test("the defaults until set; a round trip keeps every field; survives a reopen")
    func roundTrip() throws {
        let f = try CatalogFixture()
        let defaults = try f.catalog.controlSettings()
        #expect(defaults == ControlSettings())
        #expect(
            defaults.requireIncidentForRecovery && defaults.pitPolicy == .default
                && defaults.defaultLaunchSettings == nil
        )
        #expect(defaults.drillOverdueDays == 30 && defaults.sessionHours == 12)
        #expect(defaults.loginFailuresBeforeLockout == 5 && defaults.lockoutSeconds == 300)

        var launch = LaunchSettings()
        launch.memoryMiB = 4096
        launch.checks = [.http(port: 80, path: "/health", status: 200, bodyPattern: nil)]
        let settings = ControlSettings(
            requireIncidentForRecovery: false,
            pitPolicy: RetentionPolicy(
                keepEveryCommitFor: 60,
                rules: [.init(unit: .hour, interval: 2, retentionDuration: 48)]
            ),
            defaultLaunchSettings: launch,
            drillOverdueDays: 7,
            sessionHours: 1,
            loginFailuresBeforeLockout: 3,
            lockoutSeconds: 900
        )
        try f.catalog.setControlSettings(settings)
        #expect(try f.catalog.controlSettings() == settings)
        try f.reopen()
        #expect(try f.catalog.controlSettings() == settings)
        try f.catalog.setControlSettings(ControlSettings())
        #expect(try f.catalog.controlSettings() == ControlSettings())
    }

    @Test("decoding takes the default for every missing key; unreadable settings read as the defaults")
    func tolerantDecoding() throws {
        let f = try CatalogFixture()
        try f.catalog.execute(sql: #"INSERT INTO settings (key, value) VALUES ('control', '{"sessionHours": 2}')"#)
        var expected = ControlSettings()
        expected.sessionHours = 2
        #expect(try f.catalog.controlSettings() == expected)
        try f.catalog.execute(sql: #"UPDATE settings SET value = '{}' WHERE key = 'control'"#)
        #expect(try f.catalog.controlSettings() == ControlSettings())
        try f.catalog.execute(sql: #"UPDATE settings SET value = 'not json' WHERE key = 'control'"#)
        #expect(try f.catalog.controlSettings() == ControlSettings())
    }

    @Test("invalid settings are settings.invalid naming the field, and change nothing")
    func validation() throws {
        let f = try CatalogFixture()
        var good = ControlSettings()
        good.drillOverdueDays = 14
        try f.catalog.setControlSettings(good)
        var badLaunch = LaunchSettings()
        badLaunch.vcpus = 0
        let cases: [(String, (inout ControlSettings) -> Void)] = [
            ("pitPolicy", { $0.pitPolicy = RetentionPolicy(keepEveryCommitFor: -1, rules: []) }),
            (
                "pitPolicy",
                {
                    $0.pitPolicy = RetentionPolicy(
                        keepEveryCommitFor: 0,
                        rules: [.init(unit: .day, interval: 0, retentionDuration: 1)]
                    )
                }
            ),
            ("defaultLaunchSettings", { $0.defaultLaunchSettings = badLaunch }),
            ("drillOverdueDays", { $0.drillOverdueDays = 0 }),
            ("sessionHours", { $0.sessionHours = -1 }),
            ("loginFailuresBeforeLockout", { $0.loginFailuresBeforeLockout = 0 }),
            ("lockoutSeconds", { $0.lockoutSeconds = 0 }),
        ]
        for (field, change) in cases {
            var settings = good
            change(&settings)
            let error = try f.expectUnchanged("settings.invalid") { try f.catalog.setControlSettings(settings) }
            #expect(error?.message.hasPrefix(field) == true, "\(error?.message ?? "")")
        }
        #expect(try f.catalog.controlSettings() == good)
    }
}
