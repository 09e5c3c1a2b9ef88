import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: applications")
struct ApplicationTests {
    @Test("launch settings that apply: the machine's own, else its application's, else the server default, else built-in")
    func effectiveLaunchSettings() throws {
        let f = try LaunchCatalogTests.fixture("web")
        let builtIn = LaunchSettings()
        #expect(try f.catalog.machine(named: "web")?.launchSettings == builtIn)
        var serverDefault = LaunchSettings()
        serverDefault.memoryMiB = 1024
        var settings = try f.catalog.controlSettings()
        settings.defaultLaunchSettings = serverDefault
        try f.catalog.setControlSettings(settings)
        #expect(try f.catalog.machine(named: "web")?.launchSettings == serverDefault, "the server's default")
        var shopSettings = LaunchSettings()
        shopSettings.vcpus = 4
        try f.catalog.createApplication(name: "shop")
        try f.catalog.updateApplication(name: "shop", launchSettings: .set(shopSettings))
        try f.catalog.setApplication(machine: "web", "shop")
        #expect(try f.catalog.machine(named: "web")?.launchSettings == shopSettings, "the application's")
        #expect(try f.catalog.machinesPage(filter: MachineFilter(), offset: 0, limit: 10).machines.first { $0.name == "web" }?.launchSettings == shopSettings)
        var own = LaunchSettings()
        own.memoryMiB = 2048
        try f.catalog.setLaunchSettings(machine: "web", own)
        #expect(try f.catalog.machine(named: "web")?.launchSettings == own, "the machine's own")
        #expect(try f.catalog.machines().first { $0.name == "web" }?.launchSettings == own)
    }

    @Test("createApplication: its fields, no machines; listed by name; survives a reopen")
    func create() throws {
        let f = try LaunchCatalogTests.fixture()
        let shop = try f.catalog.createApplication(
            name: "shop",
            description: "the web shop",
            rpoSeconds: 300,
            rtoSeconds: 1800
        )
        #expect(
            shop
                == ApplicationRecord(
                    name: "shop",
                    description: "the web shop",
                    rpoSeconds: 300,
                    rtoSeconds: 1800,
                    launchSettings: nil,
                    createdAt: CatalogFixture.start,
                    machines: []
                )
        )
        f.clock.advance(seconds: 1)
        let blog = try f.catalog.createApplication(name: "blog")
        #expect(blog.description == "" && blog.rpoSeconds == nil && blog.rtoSeconds == nil)
        #expect(try f.catalog.applications() == [blog, shop])
        #expect(try f.catalog.application(named: "shop") == shop)
        #expect(try f.catalog.application(named: "nothing") == nil)
        try f.reopen()
        #expect(try f.catalog.applications() == [blog, shop])
    }

    @Test("createApplication errors: exists, invalid name, objectives that are not positive; nothing changes")
    func createErrors() throws {
        let f = try LaunchCatalogTests.fixture()
        try f.catalog.createApplication(name: "shop")
        try f.expectUnchanged("application.exists") { _ = try f.catalog.createApplication(name: "shop") }
        try f.expectUnchanged("name.invalid") { _ = try f.catalog.createApplication(name: "my shop") }
        try f.expectUnchanged("name.invalid") { _ = try f.catalog.application(named: "") }
        let rpo = try f.expectUnchanged("application.invalid-objective") {
            _ = try f.catalog.createApplication(name: "blog", rpoSeconds: 0)
        }
        #expect(rpo?.message.contains("RPO") == true)
        try f.expectUnchanged("application.invalid-objective") {
            _ = try f.catalog.createApplication(name: "blog", rtoSeconds: -5)
        }
    }

    @Test("updateApplication: nil and .keep leave a field, .set changes it, .clear removes it")
    func update() throws {
        let f = try LaunchCatalogTests.fixture()
        try f.catalog.createApplication(name: "shop", description: "old", rpoSeconds: 300, rtoSeconds: 1800)
        var settings = LaunchSettings()
        settings.vcpus = 4
        settings.checks = [.tcp(port: 443)]

        var shop = try f.catalog.updateApplication(name: "shop", rtoSeconds: .clear, launchSettings: .set(settings))
        #expect(shop.description == "old" && shop.rpoSeconds == 300 && shop.rtoSeconds == nil)
        #expect(shop.launchSettings == settings)

        shop = try f.catalog.updateApplication(name: "shop", description: "new", rpoSeconds: .set(60))
        #expect(shop.description == "new" && shop.rpoSeconds == 60 && shop.rtoSeconds == nil)
        #expect(shop.launchSettings == settings, ".keep keeps the stored settings")

        shop = try f.catalog.updateApplication(name: "shop", rtoSeconds: .set(900), launchSettings: .clear)
        #expect(shop.rtoSeconds == 900 && shop.launchSettings == nil)
        #expect(try f.catalog.application(named: "shop") == shop)
        #expect(try f.catalog.updateApplication(name: "shop") == shop, "nothing given, nothing changed")

        try f.expectUnchanged("application.unknown") {
            _ = try f.catalog.updateApplication(name: "blog", description: "x")
        }
        try f.expectUnchanged("application.invalid-objective") {
            _ = try f.catalog.updateApplication(name: "shop", rpoSeconds: .set(0))
        }
        try f.expectUnchanged("application.invalid-objective") {
            _ = try f.catalog.updateApplication(name: "shop", rtoSeconds: .set(-1))
        }
        var bad = LaunchSettings()
        bad.vcpus = 0
        try f.expectUnchanged("launch.bad-settings") {
            _ = try f.catalog.updateApplication(name: "shop", launchSettings: .set(bad))
        }
        #expect(FieldChange<Int64>.keep.applied(to: 5) == 5)
        #expect(FieldChange<Int64>.clear.applied(to: 5) == nil)
        #expect(FieldChange<Int64>.set(7).applied(to: nil) == 7)
    }

    @Test("setApplication creates a missing application (once) and lists the machine in it")
    func setApplicationCreates() throws {
        let f = try LaunchCatalogTests.fixture("web-1", "web-2", "db-1")
        try f.catalog.createApplication(name: "blog", description: "kept")
        f.clock.advance(seconds: 10)
        try f.catalog.setApplication(machine: "web-1", "shop")
        let created = f.clock.now()
        f.clock.advance(seconds: 10)
        try f.catalog.setApplication(machine: "web-2", "shop")
        try f.catalog.setApplication(machine: "db-1", "blog")
        let shop = try #require(try f.catalog.application(named: "shop"))
        #expect(shop.createdAt == created, "the second machine does not re-create it")
        #expect(shop.machines == ["web-1", "web-2"])
        #expect(shop.description == "" && shop.rpoSeconds == nil)
        #expect(try f.catalog.application(named: "blog")?.description == "kept")
        #expect(try f.catalog.application(named: "blog")?.machines == ["db-1"])
        #expect(try f.catalog.applications().map(\.name) == ["blog", "shop"])

        // A failed assignment creates nothing.
        expectError("machine.unknown") { try f.catalog.setApplication(machine: "ghost", "ghost-app") }
        #expect(try f.catalog.application(named: "ghost-app") == nil)
        // Removed machines are not listed.
        try f.catalog.removeMachine(named: "web-2")
        #expect(try f.catalog.application(named: "shop")?.machines == ["web-1"])
        #expect(try f.catalog.applications().first { $0.name == "shop" }?.machines == ["web-1"])
    }

    @Test("deleteApplication refuses while machines belong to it, naming them; afterwards it is gone")
    func delete() throws {
        let f = try LaunchCatalogTests.fixture("web-1", "db-1", "old-1")
        try f.catalog.setApplication(machine: "web-1", "shop")
        try f.catalog.setApplication(machine: "db-1", "shop")
        try f.catalog.setApplication(machine: "old-1", "shop")
        try f.catalog.removeMachine(named: "old-1")
        let inUse = try f.expectUnchanged("application.in-use") { try f.catalog.deleteApplication("shop") }
        #expect(inUse?.message.contains("db-1, web-1") == true)
        #expect(inUse?.message.contains("old-1") == false)

        try f.catalog.setApplication(machine: "web-1", nil)
        try f.catalog.setApplication(machine: "db-1", "blog")
        try f.catalog.deleteApplication("shop")
        #expect(try f.catalog.application(named: "shop") == nil)
        #expect(try f.catalog.machine(named: "old-1")?.application == nil, "a removed machine no longer names it")
        try f.expectUnchanged("application.unknown") { try f.catalog.deleteApplication("shop") }
        try f.expectUnchanged("name.invalid") { try f.catalog.deleteApplication("no way") }
    }
}
