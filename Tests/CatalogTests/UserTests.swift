import GRDB
import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: users")
struct UserTests {
    static let password = CatalogFixture.password

    @Test("createUser: active, with its roles and dates; listed by name; survives a reopen")
    func create() throws {
        let f = try CatalogFixture()
        let alice = try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin, .analyst])
        #expect(alice.name == "alice")
        #expect(alice.roles == [.admin, .analyst])
        #expect(alice.createdAt == CatalogFixture.start)
        #expect(alice.passwordChangedAt == CatalogFixture.start)
        #expect(alice.disabledAt == nil && alice.isActive)
        f.clock.advance(seconds: 5)
        let bob = try f.catalog.createUser(name: "bob.ops", password: Self.password + "!", roles: [.operator])
        #expect(try f.catalog.users() == [alice, bob])
        #expect(try f.catalog.user(named: "alice") == alice)
        #expect(try f.catalog.user(named: "nobody") == nil)
        #expect(try f.catalog.activeAdminCount() == 1)

        // Roles are stored comma-separated in Role order; the hash is scrypt, never the password.
        let stored = try f.catalog.read { db in
            try String.fetchAll(db, sql: "SELECT roles || ' ' || password_hash FROM users ORDER BY name")
        }
        #expect(stored[0].hasPrefix("analyst,admin scrypt$32768$8$1$"))
        #expect(stored.allSatisfy { !$0.contains(Self.password) })

        try f.reopen()
        #expect(try f.catalog.users() == [alice, bob])
    }

    @Test("createUser errors: exists, invalid name, weak password, no roles; nothing changes")
    func createErrors() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        let exists = try f.expectUnchanged("user.exists") {
            _ = try f.catalog.createUser(name: "alice", password: Self.password, roles: [.analyst])
        }
        #expect(exists?.message.contains("alice") == true)
        try f.expectUnchanged("name.invalid") {
            _ = try f.catalog.createUser(name: "al ice", password: Self.password, roles: [.admin])
        }
        try f.expectUnchanged("name.invalid") {
            _ = try f.catalog.createUser(name: "", password: Self.password, roles: [.admin])
        }
        try f.expectUnchanged("name.invalid") {
            _ = try f.catalog.createUser(name: "-x", password: Self.password, roles: [.admin])
        }
        let short = try f.expectUnchanged("user.weak-password") {
            _ = try f.catalog.createUser(name: "bob", password: "elevenchars", roles: [.admin])
        }
        #expect(short?.message.contains("12") == true)
        try f.expectUnchanged("user.weak-password") {
            _ = try f.catalog.createUser(name: "long-user-name", password: "long-user-name", roles: [.admin])
        }
        try f.expectUnchanged("user.weak-password") {
            _ = try f.catalog.createUser(name: "long-user-name", password: "LONG-USER-NAME", roles: [.admin])
        }
        let noRoles = try f.expectUnchanged("user.no-roles") {
            _ = try f.catalog.createUser(name: "bob", password: Self.password, roles: [])
        }
        #expect(noRoles?.message.contains("analyst") == true)
        // Exactly 12 characters (not bytes) is enough.
        _ = try f.catalog.createUser(name: "carol", password: "ééééééééééé1", roles: [.analyst])
        #expect(try f.catalog.verifyPassword(user: "carol", password: "ééééééééééé1") != nil)
    }

    @Test(
        "verifyPassword: the user for the right password; nil for a wrong one, an unknown or invalid name, a disabled user"
    )
    func verify() throws {
        let f = try CatalogFixture()
        let alice = try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        try f.catalog.createUser(name: "bob", password: Self.password, roles: [.analyst])
        #expect(try f.catalog.verifyPassword(user: "alice", password: Self.password) == alice)
        #expect(try f.catalog.verifyPassword(user: "alice", password: Self.password + "x") == nil)
        #expect(try f.catalog.verifyPassword(user: "alice", password: "") == nil)
        #expect(try f.catalog.verifyPassword(user: "nobody", password: Self.password) == nil)
        #expect(try f.catalog.verifyPassword(user: "not a name", password: Self.password) == nil)
        try f.catalog.setUserDisabled("bob", disabled: true)
        #expect(try f.catalog.verifyPassword(user: "bob", password: Self.password) == nil)
        try f.catalog.setUserDisabled("bob", disabled: false)
        #expect(try f.catalog.verifyPassword(user: "bob", password: Self.password)?.name == "bob")
    }

    @Test("an unknown user costs a full scrypt, like a known one (timing does not tell which names exist)")
    func unknownUserTiming() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        let clock = ContinuousClock()
        func fastest(_ body: () throws -> Void) rethrows -> Duration {
            var best = Duration.seconds(1000)
            for _ in 0..<3 { best = min(best, try clock.measure(body)) }
            return best
        }
        let known = try fastest { _ = try f.catalog.verifyPassword(user: "alice", password: "wrong password!") }
        let unknown = try fastest { _ = try f.catalog.verifyPassword(user: "mallory", password: "wrong password!") }
        let invalid = try fastest { _ = try f.catalog.verifyPassword(user: "not a name", password: "wrong password!") }
        // A lookup without scrypt takes well under a millisecond; scrypt with N = 32768 takes tens of them.
        #expect(known > .milliseconds(5))
        #expect(unknown * 3 > known, "unknown \(unknown), known \(known)")
        #expect(invalid * 3 > known, "invalid \(invalid), known \(known)")
    }

    @Test("setRoles replaces the roles; unknown user, no roles and the last admin are refused unchanged")
    func roles() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        try f.catalog.createUser(name: "bob", password: Self.password, roles: [.analyst])
        let bob = try f.catalog.setRoles(user: "bob", roles: [.decider, .operator])
        #expect(bob.roles == [.decider, .operator])
        #expect(try f.catalog.user(named: "bob")?.roles == [.decider, .operator])

        try f.expectUnchanged("user.unknown") { _ = try f.catalog.setRoles(user: "nobody", roles: [.admin]) }
        try f.expectUnchanged("user.no-roles") { _ = try f.catalog.setRoles(user: "bob", roles: []) }
        let last = try f.expectUnchanged("user.last-admin") {
            _ = try f.catalog.setRoles(user: "alice", roles: [.analyst])
        }
        #expect(last?.message.contains("another") == true)

        // With a second admin, the first may stop being one.
        try f.catalog.setRoles(user: "bob", roles: [.admin])
        #expect(try f.catalog.activeAdminCount() == 2)
        try f.catalog.setRoles(user: "alice", roles: [.analyst, .decider])
        #expect(try f.catalog.activeAdminCount() == 1)
        // Keeping admin among other roles is fine for the last admin.
        try f.catalog.setRoles(user: "bob", roles: [.admin, .operator])
    }

    @Test("the last active admin cannot be disabled or deleted; a disabled admin does not count")
    func lastAdmin() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        try f.catalog.createUser(name: "bob", password: Self.password, roles: [.admin])
        try f.catalog.createUser(name: "carol", password: Self.password, roles: [.analyst])
        try f.catalog.setUserDisabled("bob", disabled: true)
        #expect(try f.catalog.activeAdminCount() == 1)
        try f.expectUnchanged("user.last-admin") { _ = try f.catalog.setUserDisabled("alice", disabled: true) }
        try f.expectUnchanged("user.last-admin") { try f.catalog.deleteUser("alice") }
        try f.expectUnchanged("user.last-admin") { _ = try f.catalog.setRoles(user: "alice", roles: [.operator]) }
        // Non-admins come and go freely.
        try f.catalog.setUserDisabled("carol", disabled: true)
        try f.catalog.deleteUser("carol")
        // Enabling bob again makes alice no longer the last.
        try f.catalog.setUserDisabled("bob", disabled: false)
        try f.catalog.deleteUser("alice")
        #expect(try f.catalog.users().map(\.name) == ["bob"])
        #expect(try f.catalog.activeAdminCount() == 1)
    }

    @Test("without any admin (before the first one is made) nothing is blocked")
    func noAdminYet() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "carol", password: Self.password, roles: [.analyst])
        #expect(try f.catalog.activeAdminCount() == 0)
        try f.catalog.setUserDisabled("carol", disabled: true)
        try f.catalog.deleteUser("carol")
    }

    @Test("disabling revokes every token and session; enabling keeps them revoked; the first date stays")
    func disable() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        try f.catalog.createUser(name: "bob", password: Self.password, roles: [.operator])
        let api = try f.catalog.createAccessToken(user: "bob", name: "ci", kind: .api, validFor: 86_400)
        let session = try f.catalog.createAccessToken(user: "bob", name: "browser", kind: .session, validFor: 3600)
        let other = try f.catalog.createAccessToken(user: "alice", name: "ci", kind: .api, validFor: 86_400)
        f.clock.advance(seconds: 10)
        let disabledAt = f.clock.now()
        let bob = try f.catalog.setUserDisabled("bob", disabled: true)
        #expect(bob.disabledAt == disabledAt && !bob.isActive)
        #expect(try f.catalog.accessToken(id: api.record.id)?.revokedAt == disabledAt)
        #expect(try f.catalog.accessToken(id: session.record.id)?.revokedAt == disabledAt)
        #expect(try f.catalog.accessToken(id: other.record.id)?.revokedAt == nil)
        #expect(try f.catalog.authenticate(secret: api.secret) == nil)

        f.clock.advance(seconds: 10)
        #expect(try f.catalog.setUserDisabled("bob", disabled: true).disabledAt == disabledAt)
        let enabled = try f.catalog.setUserDisabled("bob", disabled: false)
        #expect(enabled.isActive)
        #expect(try f.catalog.authenticate(secret: api.secret) == nil, "revoked tokens stay revoked")
        try f.expectUnchanged("user.unknown") { _ = try f.catalog.setUserDisabled("nobody", disabled: true) }
    }

    @Test("setPassword: the new password works, the old does not, sessions are revoked, API tokens stay")
    func password() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        let api = try f.catalog.createAccessToken(user: "alice", name: "ci", kind: .api, validFor: 86_400)
        let session = try f.catalog.createAccessToken(user: "alice", name: "browser", kind: .session, validFor: 3600)
        f.clock.advance(seconds: 60)
        try f.catalog.setPassword(user: "alice", password: "a brand new passphrase")
        #expect(try f.catalog.verifyPassword(user: "alice", password: "a brand new passphrase") != nil)
        #expect(try f.catalog.verifyPassword(user: "alice", password: Self.password) == nil)
        #expect(try f.catalog.user(named: "alice")?.passwordChangedAt == f.clock.now())
        #expect(try f.catalog.user(named: "alice")?.createdAt == CatalogFixture.start)
        #expect(try f.catalog.authenticate(secret: session.secret) == nil)
        #expect(try f.catalog.accessToken(id: session.record.id)?.revokedAt == f.clock.now())
        #expect(try f.catalog.authenticate(secret: api.secret)?.token.id == api.record.id)

        try f.expectUnchanged("user.weak-password") { try f.catalog.setPassword(user: "alice", password: "short") }
        try f.expectUnchanged("user.weak-password") { try f.catalog.setPassword(user: "alice", password: "alice") }
        try f.expectUnchanged("user.unknown") { try f.catalog.setPassword(user: "nobody", password: Self.password) }
    }

    @Test("deleteUser removes the user and their tokens; unknown users are refused")
    func delete() throws {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: Self.password, roles: [.admin])
        try f.catalog.createUser(name: "bob", password: Self.password, roles: [.analyst])
        let token = try f.catalog.createAccessToken(user: "bob", name: "ci", kind: .api, validFor: 3600)
        try f.catalog.deleteUser("bob")
        #expect(try f.catalog.user(named: "bob") == nil)
        #expect(try f.catalog.accessToken(id: token.record.id) == nil)
        #expect(try f.catalog.authenticate(secret: token.secret) == nil)
        #expect(try f.catalog.verifyPassword(user: "bob", password: Self.password) == nil)
        try f.expectUnchanged("user.unknown") { try f.catalog.deleteUser("bob") }
        // The name can be used again.
        try f.catalog.createUser(name: "bob", password: Self.password, roles: [.decider])
    }
}
