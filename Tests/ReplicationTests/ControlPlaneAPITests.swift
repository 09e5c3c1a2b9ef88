import ControlPlane
import ControlPlaneClient
import Foundation
import LifeboatAPI
import LifeboatCore
import LifeboatTesting
import Testing

/// The REST API of a real `lifeboat server run` over HTTPS, request by request: who may call what, sessions and
/// CSRF, login throttling, strict input, the audit log and its tamper evidence, plain HTTP only on loopback, and
/// the OpenAPI document against the routes the server really has.
@Suite("Control plane REST API", .serialized)
struct ControlPlaneAPITests {
    static func password(_ user: String) -> String { "\(user) uses a long password" }

    /// A login body for a browser session.
    static func credentials(_ user: String, _ password: String) -> String { APISite.json(["user": user, "password": password]) }

    // MARK: - 1. Authorization matrix

    @Test(
        "authorization matrix: every route × every caller (401 without credentials, 403 without the permission); dry runs change nothing"
    )
    func authorizationMatrix() async throws {
        try await APISite.with { site in
            // One user per role and one holding two; each with a second token that POST /logout may revoke.
            let people: [(label: String, user: String, roles: Set<Role>)] = [
                ("analyst", "ana", [.analyst]), ("decider", "dec", [.decider]), ("operator", "ope", [.operator]),
                ("admin", "adm", [.admin]), ("decider+operator", "duo", [.decider, .operator]),
            ]
            var callers: [MatrixCaller] = [MatrixCaller(label: "nobody", user: nil, roles: [], token: nil, tokenId: nil, spare: nil)]
            var roleCallers: [MatrixCaller] = []
            for person in people {
                try await site.createUser(person.user, roles: person.roles.sorted(), password: Self.password(person.user))
                let main = try await site.login(person.user, Self.password(person.user), tokenName: "matrix")
                let spare = try await Self.newToken(site, as: main.secret, name: "logout")
                roleCallers.append(
                    MatrixCaller(
                        label: person.label, user: person.user, roles: person.roles, token: main.secret, tokenId: main.id,
                        spare: spare.secret
                    )
                )
            }
            try await site.createUser("bystander", roles: [.analyst], password: Self.password("bystander"))

            // An admin's token that expired (moved into the past in the catalog) and one that was revoked.
            let admin = try #require(roleCallers.first { $0.user == "adm" }?.token)
            let expired = try await Self.newToken(site, as: admin, name: "to-expire")
            let past = (Int64(Date().timeIntervalSince1970) - 60) * 1_000_000_000
            try site.sqlite("UPDATE access_tokens SET expires_at = \(past) WHERE id = '\(expired.id)';")
            let revoked = try await Self.newToken(site, as: admin, name: "to-revoke")
            let revoking = try await site.send(.DELETE, "/api/v1/tokens/\(revoked.id)", token: revoked.secret)
            try #require(revoking.status == 200, "revoke: \(revoking)")
            for (what, secret) in [("expired", expired.secret), ("revoked", revoked.secret)] {
                let me = try await site.send(.GET, "/api/v1/me", token: secret)
                try #require(me.status == 401, "the \(what) token still works: \(me)")
            }
            for (label, token) in [("expired", expired), ("revoked", revoked)] {
                callers.append(
                    MatrixCaller(label: label, user: nil, roles: [], token: token.secret, tokenId: token.id, spare: token.secret)
                )
            }
            callers += roleCallers

            // Real targets where the API has them, so that authorized dry runs reach their last check.
            let application = try await site.send(
                .POST, "/api/v1/applications", json: #"{"name":"app1","description":"matrix target","rpoObjectiveSeconds":600}"#,
                token: site.adminToken
            )
            try #require(application.status == 201, "\(application)")
            let decider = try #require(roleCallers.first { $0.user == "dec" }?.token)
            let declared = try await site.send(
                .POST, "/api/v1/incidents", json: #"{"title":"matrix incident","severity":"LOW"}"#, token: decider
            )
            try #require(declared.status == 201, "\(declared)")
            let incident = try #require(declared.object?["id"] as? String)

            let cases = try Self.matrixCases(incident: incident, othersToken: site.adminTokenId)
            let spareIds = try await Self.tokenIds(site, named: "logout")
            try #require(spareIds.count == roleCallers.count, "spare tokens: \(spareIds)")
            let before = try await Self.state(site, ignoringTokens: spareIds)
            let auditStart = try await site.auditHead()

            // Every case as every caller.
            var cells: [[MatrixCell]] = []
            var malformed: [String] = []
            var notDryRuns: [String] = []
            var audited: [(action: String, actor: String, status: Int, code: String)] = []
            for matrixCase in cases {
                var row: [MatrixCell] = []
                for caller in callers {
                    let token = matrixCase.usesSpareToken ? caller.spare : caller.token
                    let answer = try await site.send(matrixCase.method, matrixCase.path(caller), json: matrixCase.body, token: token)
                    let expected = matrixCase.expectation(for: caller)
                    row.append(MatrixCell(status: answer.status, code: answer.code, expected: expected, met: expected.isMet(by: answer)))
                    if answer.status >= 400, let problem = answer.errorShapeProblem {
                        malformed.append("\(matrixCase.label) as \(caller.label): \(problem)")
                    }
                    // An authorized state-changing request answered its dry run (login and logout have none).
                    let session = ["POST /api/v1/login", "POST /api/v1/logout"].contains(matrixCase.route.description)
                    if matrixCase.method != .GET, !session, (200..<300).contains(answer.status), answer.object?["dryRun"] as? Bool != true {
                        notDryRuns.append("\(matrixCase.label) as \(caller.label): \(answer)")
                    }
                    // Recorded: requests by someone the server knows, and logins; not anonymous 401s (noise).
                    if matrixCase.method != .GET, caller.user != nil || matrixCase.route.description == "POST /api/v1/login" {
                        audited.append(
                            ("\(matrixCase.route.method) \(matrixCase.route.path)", caller.user ?? "anonymous", answer.status, answer.code)
                        )
                    }
                }
                cells.append(row)
            }
            let failures = cells.joined().filter { !$0.met }.count
            #expect(
                failures == 0,
                "\(failures) answers differ from the permission table (status✗expected):\n\(Self.table(cases, callers, cells))"
            )
            #expect(malformed.isEmpty, "malformed error answers:\n\(malformed.joined(separator: "\n"))")
            #expect(notDryRuns.isEmpty, "answers that are not dry runs:\n\(notDryRuns.joined(separator: "\n"))")

            // Nothing changed but the spare tokens that POST /logout revoked.
            let after = try await Self.state(site, ignoringTokens: spareIds)
            for key in before.keys.sorted() {
                #expect(before[key] == after[key], "\(key) changed:\nbefore \(before[key] ?? "-")\nafter  \(after[key] ?? "-")")
            }
            let tokens = try await site.get("/api/v1/tokens?all=true").array as? [[String: Any]] ?? []
            for token in tokens where spareIds.contains(token["id"] as? String ?? "") {
                #expect(token["revokedAt"] as? String != nil, "POST /logout did not revoke \(token)")
            }
            for caller in roleCallers {
                let me = try await site.send(.GET, "/api/v1/me", token: caller.token)
                #expect(me.status == 200, "\(caller.label)'s token stopped working: \(me)")
            }

            // Every state-changing request of a known caller (and every login) is in the audit log, in order; no GET
            // is, nor the anonymous and expired or revoked callers' 401s.
            let entries = try await site.auditEntries(afterSeq: auditStart)
            #expect(entries.count == audited.count, "\(audited.count) state-changing requests, \(entries.count) audit entries")
            for (entry, request) in zip(entries, audited) {
                let result = entry["result"] as? String ?? ""
                let expectedResult = request.status >= 400 ? "\(request.status) \(request.code)" : "\(request.status)"
                let matches =
                    entry["action"] as? String == request.action && entry["actor"] as? String == request.actor
                    && entry["source"] as? String == "127.0.0.1" && result == expectedResult
                #expect(matches, "audit entry \(entry) for \(request)")
            }
            let verified = try await site.get("/api/v1/audit/verify")
            #expect(verified.object?["intact"] as? Bool == true, "\(verified)")
        }
    }

    /// The requests of the matrix: every route once (placeholders for ids, `?dryRun=true` and a body on every
    /// state-changing one) and the cases the route table's notes describe.
    fileprivate static func matrixCases(incident: String, othersToken: String) throws -> [MatrixCase] {
        let bodies: [String: String] = [
            "POST /api/v1/login": "{}",
            "POST /api/v1/launches": #"{"mode":"TEST","all":true}"#,
            "POST /api/v1/terminations": #"{"instances":["ri-0000000000000000"]}"#,
            "POST /api/v1/applications": #"{"name":"matrix-app","rtoObjectiveSeconds":60}"#,
            "PATCH /api/v1/applications/{name}": #"{"description":"changed by the matrix","clear":["rpoObjectiveSeconds"]}"#,
            "POST /api/v1/incidents": #"{"title":"matrix","severity":"LOW"}"#,
            "POST /api/v1/incidents/{id}/close": #"{"summary":"closed by the matrix"}"#,
            "POST /api/v1/incidents/{id}/notes": #"{"kind":"REPORT","text":"written by the matrix"}"#,
            "POST /api/v1/users": #"{"name":"matrix-user","password":"matrix user password","roles":["admin"]}"#,
            "PATCH /api/v1/users/{name}": #"{"roles":["admin"],"disabled":true}"#,
            "POST /api/v1/tokens": #"{"name":"matrix token","days":2}"#,
            "POST /api/v1/enrollment-tokens": #"{"expiresHours":2,"note":"matrix"}"#,
            "PATCH /api/v1/settings": #"{"sessionHours":1,"requireIncidentForRecovery":false}"#,
            "PATCH /api/v1/machines/{name}": #"{"throttleMbps":10}"#,
        ]
        let placeholders: [(String, String)] = [
            ("/machines/{name}", "/machines/no-such-machine"), ("/applications/{name}", "/applications/app1"),
            ("/users/{name}", "/users/bystander"), ("/incidents/{id}", "/incidents/\(incident)"),
            ("/jobs/{id}", "/jobs/job-0000000000000000"), ("/instances/{id}", "/instances/ri-0000000000000000"),
            ("/tokens/{id}", "/tokens/tok-0000000000000000"),
        ]
        var cases: [MatrixCase] = []
        for route in ControlPlaneServer.routes {
            var path = route.path
            for (pattern, value) in placeholders { path = path.replacingOccurrences(of: pattern, with: value) }
            try #require(!path.contains("{"), "no placeholder for \(route)")
            let method = try #require(HTTPVerb(rawValue: route.method), "\(route)")
            let changes = method != .GET
            // Login and logout have no dry run (they refuse one): they are sent as they are.
            let session = ["POST /api/v1/login", "POST /api/v1/logout"].contains(route.description)
            let concrete = changes && !session ? path + "?dryRun=true" : path
            cases.append(
                MatrixCase(
                    label: route.description, route: route, method: method, path: { _ in concrete },
                    body: changes ? bodies[route.description] ?? "{}" : nil, permission: route.permission,
                    usesSpareToken: route.description == "POST /api/v1/logout"
                )
            )
        }
        func route(_ method: String, _ path: String) throws -> RouteSpec {
            try #require(ControlPlaneServer.routes.first { $0.method == method && $0.path == path }, "\(method) \(path)")
        }
        // The routes whose permission depends on the request (RouteTable's notes).
        let noted = Set(ControlPlaneServer.routes.filter { $0.note != nil }.map(\.description))
        #expect(
            noted == ["POST /api/v1/launches", "GET /api/v1/tokens", "DELETE /api/v1/tokens/{id}"],
            "routes with notes changed: \(noted.sorted()) — add their cases to the matrix"
        )
        let launches = try route("POST", "/api/v1/launches")
        let listTokens = try route("GET", "/api/v1/tokens")
        let revokeToken = try route("DELETE", "/api/v1/tokens/{id}")
        cases += [
            MatrixCase(
                label: "POST /api/v1/launches RECOVERY", route: launches, method: .POST, path: { _ in "/api/v1/launches?dryRun=true" },
                body: #"{"mode":"RECOVERY","all":true}"#, permission: .launchRecovery
            ),
            MatrixCase(
                label: "GET /api/v1/tokens?all=true", route: listTokens, method: .GET, path: { _ in "/api/v1/tokens?all=true" },
                body: nil, permission: .readAudit
            ),
            MatrixCase(
                label: "GET /api/v1/tokens?user=chief", route: listTokens, method: .GET,
                path: { _ in "/api/v1/tokens?user=\(APISite.adminName)" }, body: nil, permission: .readAudit
            ),
            MatrixCase(
                label: "DELETE /api/v1/tokens/{own}", route: revokeToken, method: .DELETE,
                path: { caller in "/api/v1/tokens/\(caller.tokenId ?? "tok-0000000000000000")?dryRun=true" }, body: "{}",
                permission: .read
            ),
            MatrixCase(
                label: "DELETE /api/v1/tokens/{chief's}", route: revokeToken, method: .DELETE,
                path: { _ in "/api/v1/tokens/\(othersToken)?dryRun=true" }, body: "{}", permission: .read, hiddenUnlessAdmin: true
            ),
        ]
        return cases
    }

    /// What an admin sees of the site's state (token use times left out, and the tokens in `ignoringTokens`).
    static func state(_ site: APISite, ignoringTokens: Set<String>) async throws -> [String: String] {
        var state: [String: String] = [:]
        for path in [
            "/api/v1/users", "/api/v1/incidents", "/api/v1/applications", "/api/v1/settings", "/api/v1/enrollment-tokens",
            "/api/v1/jobs?limit=500", "/api/v1/instances?all=true", "/api/v1/machines?removed=true&limit=500",
        ] {
            state[path] = APISite.normalized(try await site.get(path).body)
        }
        let tokens = (try await site.get("/api/v1/tokens?all=true").array as? [[String: Any]] ?? [])
            .filter { !ignoringTokens.contains($0["id"] as? String ?? "") }
            .sorted { ($0["id"] as? String ?? "") < ($1["id"] as? String ?? "") }
        state["/api/v1/tokens?all=true"] = APISite.normalized(Array(APISite.json(value: tokens).utf8), dropping: ["lastUsedAt"])
        return state
    }

    /// `POST /tokens`: another API token of the caller.
    static func newToken(_ site: APISite, as token: String, name: String) async throws -> (id: String, secret: String) {
        let answer = try await site.send(.POST, "/api/v1/tokens", json: APISite.json(["name": name, "days": 1]), token: token)
        try #require(answer.status == 201, "POST /tokens: \(answer)")
        let issued = try #require(answer.object?["token"] as? [String: Any], "\(answer)")
        return (try #require(issued["id"] as? String), try #require(answer.object?["secret"] as? String))
    }

    static func tokenIds(_ site: APISite, named name: String) async throws -> Set<String> {
        let tokens = try await site.get("/api/v1/tokens?all=true").array as? [[String: Any]] ?? []
        return Set(tokens.filter { $0["name"] as? String == name }.compactMap { $0["id"] as? String })
    }

    /// The matrix as text: one row per case, one column per caller, `status✗expected` where they differ.
    fileprivate static func table(_ cases: [MatrixCase], _ callers: [MatrixCaller], _ cells: [[MatrixCell]]) -> String {
        let first = (cases.map(\.label.count).max() ?? 10) + 1
        let widths = callers.map { max($0.label.count, 11) + 1 }
        func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count + 1), withPad: " ", startingAt: 0) }
        var lines = [pad("", first) + zip(callers, widths).map { pad($0.label, $1) }.joined()]
        for (matrixCase, row) in zip(cases, cells) {
            let text = zip(row, widths).map { cell, width in
                pad(cell.met ? "\(cell.status)" : "\(cell.status)✗\(cell.expected.rawValue)", width)
            }
            lines.append(pad(matrixCase.label, first) + text.joined())
        }
        return lines.joined(separator: "\n")
    }

    // MARK: - 2. Sessions

    @Test(
        "a session: secure cookie, CSRF token required on every state change, logout ends it; a stale cookie does not block login or health"
    )
    func sessions() async throws {
        try await APISite.with { site in
            let credentials = APISite.json(["user": APISite.adminName, "password": APISite.adminPassword])
            let login = try await site.send(.POST, "/api/v1/login", json: credentials)
            try #require(login.status == 201, "\(login)")
            let setCookie = try #require(login.values("Set-Cookie").first { $0.hasPrefix(API.sessionCookie + "=") }, "\(login.headers)")
            let parts = setCookie.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            let attributes = Set(parts.dropFirst().map { $0.lowercased() })
            for wanted in ["httponly", "secure", "samesite=strict", "path=/"] {
                #expect(attributes.contains(wanted), "the session cookie lacks \(wanted): \(setCookie)")
            }
            let cookie = try #require(parts.first)
            let value = String(cookie.dropFirst(API.sessionCookie.count + 1))
            #expect(value.hasPrefix("lbk1_"), "cookie value: \(cookie)")
            let csrf = try #require(login.object?["csrfToken"] as? String, "\(login)")
            #expect(csrf.count >= 20, "a short CSRF token: \(csrf)")
            #expect(login.object?["user"] as? String == APISite.adminName)
            let withCookie = [("Cookie", cookie)]

            let me = try await site.send(.GET, "/api/v1/me", headers: withCookie)
            #expect(me.status == 200 && me.object?["authenticatedBy"] as? String == "session", "\(me)")

            // A state-changing request with the cookie needs the session's CSRF token.
            let dryToken = #"{"name":"from the browser"}"#
            let missing = try await site.send(.POST, "/api/v1/tokens?dryRun=true", json: dryToken, headers: withCookie)
            expectError(missing, 403, "auth.csrf", "no CSRF header")
            let wrong = try await site.send(
                .POST, "/api/v1/tokens?dryRun=true", json: dryToken, headers: withCookie + [(API.csrfHeader, "not-the-token")]
            )
            expectError(wrong, 403, "auth.csrf", "a wrong CSRF header")
            let second = try await site.send(.POST, "/api/v1/login", json: credentials)
            let otherCSRF = try #require(second.object?["csrfToken"] as? String, "\(second)")
            let foreign = try await site.send(
                .POST, "/api/v1/tokens?dryRun=true", json: dryToken, headers: withCookie + [(API.csrfHeader, otherCSRF)]
            )
            expectError(foreign, 403, "auth.csrf", "another session's CSRF token")
            let right = try await site.send(
                .POST, "/api/v1/tokens?dryRun=true", json: dryToken, headers: withCookie + [(API.csrfHeader, csrf)]
            )
            #expect(right.status == 200 && right.object?["dryRun"] as? Bool == true, "with the right CSRF token: \(right)")
            let settings = try await site.send(
                .PATCH, "/api/v1/settings?dryRun=true", json: #"{"sessionHours":2}"#, headers: withCookie + [(API.csrfHeader, csrf)]
            )
            #expect(settings.status == 200, "an admin's session changes settings (dry run): \(settings)")

            // An API token is not a session cookie.
            let tokenAsCookie = try await site.send(.GET, "/api/v1/me", headers: [("Cookie", "\(API.sessionCookie)=\(site.adminToken)")])
            expectError(tokenAsCookie, 401, "auth.session-expired", "an API token sent as the cookie")

            // Logging out needs the CSRF token too, then revokes the session and expires the cookie.
            let forcedLogout = try await site.send(.POST, "/api/v1/logout", json: "{}", headers: withCookie)
            expectError(forcedLogout, 403, "auth.csrf", "logout without the CSRF token")
            let stillIn = try await site.send(.GET, "/api/v1/me", headers: withCookie)
            #expect(stillIn.status == 200, "a refused logout ended the session: \(stillIn)")
            let logout = try await site.send(.POST, "/api/v1/logout", json: "{}", headers: withCookie + [(API.csrfHeader, csrf)])
            #expect(logout.status == 200, "\(logout)")
            let cleared = logout.values("Set-Cookie").first { $0.hasPrefix(API.sessionCookie + "=") } ?? ""
            #expect(cleared.lowercased().contains("max-age=0"), "logout does not expire the cookie: \(logout.headers)")
            let gone = try await site.send(.GET, "/api/v1/me", headers: withCookie)
            expectError(gone, 401, "auth.session-expired", "the cookie after logout")
            let goneWrite = try await site.send(
                .POST, "/api/v1/tokens?dryRun=true", json: dryToken, headers: withCookie + [(API.csrfHeader, csrf)]
            )
            expectError(goneWrite, 401, "auth.session-expired", "a write with the cookie after logout")

            // The stale cookie stands in the way of nothing public.
            let again = try await site.send(.POST, "/api/v1/login", json: credentials, headers: withCookie)
            #expect(again.status == 201, "login with a stale cookie: \(again)")
            let health = try await site.send(.GET, "/api/v1/health", headers: withCookie)
            #expect(health.status == 200, "health with a stale cookie: \(health)")
            let document = try await site.send(.GET, "/api/v1/openapi.json", headers: withCookie)
            #expect(document.status == 200, "openapi.json with a stale cookie: \(document.status)")
        }
    }

    // MARK: - Hardening (found by review)

    @Test("hardening: no CSRF bypass through //api, JSON bodies need their Content-Type, huge page numbers, open redirects, cross-site login forms, changes refused while the audit log cannot record them")
    func hardening() async throws {
        try await APISite.with { site in
            let credentials = APISite.json(["user": APISite.adminName, "password": APISite.adminPassword])
            let login = try await site.send(.POST, "/api/v1/login", json: credentials)
            try #require(login.status == 201, "\(login)")
            let setCookie = try #require(login.values("Set-Cookie").first { $0.hasPrefix(API.sessionCookie + "=") })
            let cookie = String(setCookie.split(separator: ";")[0])
            let newUser = #"{"name":"eve","password":"eve's long password","roles":["admin"]}"#

            // The cookie without the CSRF token, on a path the router normalizes: still refused.
            for path in ["/api/v1/users", "//api/v1/users", "/api//v1/users"] {
                let forged = try await site.send(.POST, path, json: newUser, headers: [("Cookie", cookie)])
                #expect(forged.status == 403 || forged.status == 404, "\(path): \(forged)")
                #expect(forged.status != 201, "a cross-site request created a user through \(path)")
            }
            // A body without Content-Type (what a cross-site "simple" request can send) is refused.
            let untyped = try await site.send(.POST, "/api/v1/users?dryRun=true", json: newUser, token: site.adminToken, contentType: nil)
            expectError(untyped, 415, "request.content-type", "a JSON body without Content-Type")
            let users = try await site.get("/api/v1/users")
            #expect(!(users.text.contains("\"eve\"")), "eve was created: \(users)")

            // Page numbers that would overflow are clamped (the server keeps running).
            for path in ["/machines?page=9223372036854775807", "/audit?page=99999999999999999"] {
                let page = try await site.send(.GET, path, headers: [("Cookie", cookie)])
                #expect(page.status == 200, "\(path): \(page.status)")
            }
            let health = try await site.get("/api/v1/health")
            #expect(health.status == 200, "the server survived")

            // After login, only plain local paths: a tab in `next` (browsers drop it: //evil) is refused.
            for next in ["/%09/evil.example/", "//evil.example", "/\\evil.example", "https://evil.example"] {
                let page = try await site.send(.GET, "/login?next=\(next)", headers: [("Cookie", cookie)])
                #expect(page.header("Location") == "/machines", "next=\(next): \(page.headers)")
            }
            // A login form posted from another site (login CSRF) is refused; from the console itself it works.
            let form = "user=\(APISite.adminName)&password=\(APISite.adminPassword.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")"
            let crossSite = try await site.send(
                .POST, "/login", json: form, contentType: "application/x-www-form-urlencoded", headers: [("Sec-Fetch-Site", "cross-site")]
            )
            #expect(crossSite.status == 403, "a cross-site login form: \(crossSite.status)")
            let sameSite = try await site.send(
                .POST, "/login", json: form, contentType: "application/x-www-form-urlencoded", headers: [("Sec-Fetch-Site", "same-origin")]
            )
            #expect(sameSite.status == 303, "the console's own login form: \(sameSite.status)")

            // Fail closed: while the audit log's head is missing, nothing changes.
            _ = try site.sqlite("DELETE FROM audit_head")
            let refused = try await site.send(.POST, "/api/v1/applications", json: #"{"name":"unrecorded"}"#, token: site.adminToken)
            expectError(refused, 503, "audit.damaged", "a change while the audit log cannot record it")
            let applications = try await site.get("/api/v1/applications")
            #expect(!applications.text.contains("unrecorded"), "the change was made: \(applications)")
            let reads = try await site.get("/api/v1/machines")
            #expect(reads.status == 200, "reading still works: \(reads)")
        }
    }

    // MARK: - 3. Login throttling

    @Test(
        "login throttling: failed logins lock the name and the address; 429 with Retry-After even for the right password; the lock ends"
    )
    func loginThrottling() async throws {
        let curl = "/usr/bin/curl"
        try #require(FileManager.default.isExecutableFile(atPath: curl), "curl sends from another loopback address")
        // The defaults: 5 failures, 300 s.
        try await APISite.with { site in
            try await site.createUser("target", roles: [.analyst], password: Self.password("target"))
            try await site.createUser("other", roles: [.analyst], password: Self.password("other"))
            let auditStart = try await site.auditHead()
            for attempt in 1...5 {
                let wrong = try await site.send(.POST, "/api/v1/login", json: Self.credentials("target", "wrong password \(attempt)"))
                expectError(wrong, 401, "auth.failed", "wrong password \(attempt)")
            }
            let right = Self.credentials("target", Self.password("target"))
            let locked = try await site.send(.POST, "/api/v1/login", json: right)
            expectError(locked, 429, "auth.throttled", "the right password after 5 failures")
            let retry = Int(locked.header("Retry-After") ?? "") ?? -1
            #expect((1...300).contains(retry), "Retry-After: \(locked.headers)")

            // The name is locked from another address too; another name from another address is not.
            let targetElsewhere = try Self.curlLogin(site, from: "127.0.0.2", json: right)
            #expect(targetElsewhere.status == 429, "the locked name from 127.0.0.2: \(targetElsewhere)")
            let other = Self.credentials("other", Self.password("other"))
            let otherElsewhere = try Self.curlLogin(site, from: "127.0.0.2", json: other)
            #expect(otherElsewhere.status == 201, "another user from another address: \(otherElsewhere)")
            // One user's typos do not lock the others out of a shared address: the address locks at 4× the limit.
            let otherHere = try await site.send(.POST, "/api/v1/login", json: other)
            #expect(otherHere.status == 201, "another user from the same address after 5 failures of one: \(otherHere)")
            // Tokens issued before keep working; the access check shows the lock.
            let me = try await site.send(.GET, "/api/v1/me", token: site.adminToken)
            #expect(me.status == 200, "\(me)")
            let check = try await site.get("/api/v1/access/check")
            #expect(check.text.contains("locked out"), "the access check does not show the lockout: \(check)")
            // Guessing many names from one address locks the address at 4 × 5 = 20 failures: then every name waits.
            for attempt in 1...15 {
                let guess = try await site.send(.POST, "/api/v1/login", json: Self.credentials("nobody\(attempt)", "guess"))
                expectError(guess, 401, "auth.failed", "guess \(attempt)")
            }
            let otherLocked = try await site.send(.POST, "/api/v1/login", json: other)
            expectError(otherLocked, 429, "auth.throttled", "another user from an address with 20 failures")

            let entries = try await site.auditEntries(afterSeq: auditStart)
            let logins = entries.filter { $0["action"] as? String == "POST /api/v1/login" && $0["actor"] as? String == "target" }
            let results = logins.compactMap { $0["result"] as? String }
            // The failures that caused the lock are recorded; the attempts the lock refused are not (a flood of them
            // must not fill the log).
            #expect(results == Array(repeating: "401 auth.failed", count: 5), "the refused logins in the audit log: \(results)")
            #expect(logins.compactMap { $0["source"] as? String } == Array(repeating: "127.0.0.1", count: 5), "sources: \(logins)")
        }
        // Lower limits set by an admin apply at once, and the lock ends after lockoutSeconds.
        try await APISite.with { site in
            try await site.createUser("target", roles: [.analyst], password: Self.password("target"))
            let lowered = try await site.send(
                .PATCH, "/api/v1/settings", json: #"{"loginFailuresBeforeLockout":3,"lockoutSeconds":5}"#, token: site.adminToken
            )
            #expect(lowered.status == 200, "\(lowered)")
            for attempt in 1...3 {
                let wrong = try await site.send(.POST, "/api/v1/login", json: Self.credentials("target", "wrong password \(attempt)"))
                expectError(wrong, 401, "auth.failed", "wrong password \(attempt) of 3")
            }
            let right = APISite.json(
                ["user": "target", "password": Self.password("target"), "token": ["name": "after the lock", "days": 1]]
            )
            let locked = try await site.send(.POST, "/api/v1/login", json: right)
            expectError(locked, 429, "auth.throttled", "the right password after 3 failures")
            let retry = Int(locked.header("Retry-After") ?? "") ?? -1
            #expect((1...5).contains(retry), "Retry-After with lockoutSeconds 5: \(locked.headers)")
            let started = Date()
            try await Task.sleep(for: .milliseconds(max(retry, 1) * 1000 + 300))
            let unlocked = try await site.send(.POST, "/api/v1/login", json: right)
            #expect(unlocked.status == 201, "the right password \(Date().timeIntervalSince(started)) s later: \(unlocked)")
        }
    }

    /// `POST /api/v1/login` from another loopback address (curl binds the source address).
    static func curlLogin(_ site: APISite, from address: String, json: String) throws -> (status: Int, body: String) {
        let r = try APIProcess.run(
            "/usr/bin/curl",
            [
                "-s", "--interface", address, "--cacert", site.caPath, "-X", "POST", site.url + "/api/v1/login",
                "-H", "Content-Type: application/json", "--data-binary", json, "-w", "\n%{http_code}",
            ],
            input: nil, timeout: 30
        )
        try #require(r.status == 0, "curl: \(r.stderr)")
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? -1, lines.dropLast().joined(separator: "\n"))
    }

    // MARK: - 4. Bad input

    @Test(
        "bad input (malformed, incomplete, mistyped, unknown fields, too large, wrong type, bad paging, unknown routes): precise JSON errors, no change"
    )
    func badInput() async throws {
        try await APISite.with { site in
            try await site.createUser("ope", roles: [.operator], password: Self.password("ope"))
            let operatorToken = try await site.login("ope", Self.password("ope")).secret
            let admin = site.adminToken
            let before = try await Self.state(site, ignoringTokens: [])

            func body(
                _ method: HTTPVerb, _ path: String, _ json: String, token: String, contentType: String? = "application/json"
            ) async throws -> APIAnswer {
                try await site.send(method, path, json: json, token: token, contentType: contentType)
            }
            // Not JSON.
            for text in [#"{"mode":"TEST","all":true"#, "mode=TEST", #"{"mode":'TEST'}"#, "{,}"] {
                let answer = try await body(.POST, "/api/v1/launches", text, token: operatorToken)
                expectError(answer, 400, "request.invalid-json", "body \(text)")
            }
            expectError(try await body(.POST, "/api/v1/launches", "", token: operatorToken), 400, "request.empty-body", "an empty body")

            // A required field missing, at the top and nested.
            expectError(
                try await body(.POST, "/api/v1/launches", #"{"all":true}"#, token: operatorToken), 400, "request.invalid-field",
                mentioning: ["'mode'"], "launch without mode"
            )
            expectError(
                try await body(.POST, "/api/v1/users", #"{"name":"x-user","roles":["analyst"]}"#, token: admin), 400,
                "request.invalid-field", mentioning: ["'password'"], "user without password"
            )
            expectError(
                try await body(.POST, "/api/v1/tokens", #"{"days":3}"#, token: admin), 400, "request.invalid-field",
                mentioning: ["'name'"], "token without name"
            )

            // A field of the wrong type, at the top, in an array and nested.
            expectError(
                try await body(.POST, "/api/v1/launches", #"{"mode":5,"all":true}"#, token: operatorToken), 400, "request.invalid-field",
                mentioning: ["'mode'", "string"], "mode as a number"
            )
            expectError(
                try await body(.POST, "/api/v1/launches", #"{"mode":"TEST","all":"yes"}"#, token: operatorToken), 400,
                "request.invalid-field", mentioning: ["'all'"], "all as a string"
            )
            expectError(
                try await body(.POST, "/api/v1/launches", #"{"mode":"TEST","machines":["web",7]}"#, token: operatorToken), 400,
                "request.invalid-field", mentioning: ["machines[1]"], "a number among machine names"
            )
            expectError(
                try await body(.PATCH, "/api/v1/settings", #"{"sessionHours":"twelve"}"#, token: admin), 400, "request.invalid-field",
                mentioning: ["'sessionHours'"], "sessionHours as a string"
            )
            expectError(
                try await body(.PATCH, "/api/v1/settings", "[1,2]", token: admin), 400, "request.invalid-field", "an array for an object"
            )

            // A field the API does not know, at the top, nested and inside an array: named in the error.
            let unknown: [(HTTPVerb, String, String, String, String)] = [
                (.POST, "/api/v1/launches", #"{"mode":"TEST","all":true,"bogus":1}"#, operatorToken, "'bogus'"),
                (.PATCH, "/api/v1/machines/x", #"{"launchSettings":{"vcpus":1,"nope":2}}"#, admin, "'launchSettings.nope'"),
                (.PATCH, "/api/v1/settings?dryRun=true", #"{"sessionhours":3}"#, admin, "'sessionhours'"),
                (
                    .PATCH, "/api/v1/settings?dryRun=true",
                    #"{"pitPolicy":{"keepEveryCommitFor":600,"rules":[{"unit":"HOUR","interval":1,"retentionDuration":24,"#
                        + #""enabled":true,"extra":0}]}}"#,
                    admin, "'pitPolicy.rules[0].extra'"
                ),
                (.POST, "/api/v1/login", #"{"user":"chief","password":"x","token":{"name":"t","scope":"all"}}"#, admin, "'token.scope'"),
            ]
            for (method, path, json, token, field) in unknown {
                expectError(
                    try await body(method, path, json, token: token), 400, "request.unknown-field", mentioning: [field],
                    "\(method) \(path) \(json)"
                )
            }

            // Too large: 256 KiB is the limit, as JSON and as a login form.
            let json = "application/json"
            let filler = String(repeating: "x", count: 300 * 1024)
            let large = APISite.json(["name": "big", "password": filler, "roles": ["analyst"]])
            expectError(
                try await site.sendBytes(.POST, "/api/v1/users?dryRun=true", Array(large.utf8), token: admin, contentType: json),
                413, "request.too-large", "a 300 KiB JSON body"
            )
            expectError(
                try await site.sendBytes(
                    .POST, "/api/v1/login", Array("user=chief&password=\(filler)".utf8), token: nil,
                    contentType: "application/x-www-form-urlencoded"
                ),
                413, "request.too-large", "a 300 KiB login form"
            )
            let fits = APISite.json(["name": "fits", "password": String(repeating: "y", count: 200 * 1024), "roles": ["analyst"]])
            expectError(
                try await site.sendBytes(.POST, "/api/v1/users?dryRun=true", Array(fits.utf8), token: admin, contentType: json),
                400, "user.weak-password", "a 200 KiB body is read (and its 200 KiB password refused)"
            )

            // Not JSON by its Content-Type.
            for type in ["text/plain", "application/xml", "multipart/form-data; boundary=x"] {
                expectError(
                    try await body(.POST, "/api/v1/launches", #"{"mode":"TEST","all":true}"#, token: operatorToken, contentType: type), 415,
                    "request.content-type", "Content-Type \(type)"
                )
            }

            // Paging and other query values.
            for query in ["limit=0", "limit=abc", "offset=-1", "limit=501", "offset=x", "limit="] {
                for path in ["/api/v1/machines", "/api/v1/jobs", "/api/v1/audit"] {
                    expectError(
                        try await site.send(.GET, "\(path)?\(query)", token: admin), 400, "request.invalid-query", "\(path)?\(query)"
                    )
                }
            }
            expectError(
                try await body(.PATCH, "/api/v1/settings?dryRun=maybe", #"{"sessionHours":2}"#, token: admin), 400,
                "request.invalid-query", mentioning: ["dryRun"], "dryRun=maybe"
            )
            expectError(try await site.send(.GET, "/api/v1/jobs?status=LOST", token: admin), 400, "request.invalid-query", "job status")

            // Routes that do not exist, with and without a login.
            for (method, path, token) in [
                (HTTPVerb.GET, "/api/v1/nothing-here", admin), (.POST, "/api/v1/nothing-here", admin), (.GET, "/api/v2/health", nil),
                (.GET, "/api/v1/settings/extra", admin), (.DELETE, "/api/v1/settings", admin),
            ] as [(HTTPVerb, String, String?)] {
                let answer = try await site.send(method, path, json: method == .GET ? nil : "{}", token: token)
                #expect([404, 405].contains(answer.status), "\(method) \(path): \(answer)")
                #expect(answer.code.hasPrefix("route."), "\(method) \(path): \(answer)")
                let problem = answer.errorShapeProblem
                #expect(problem == nil, "\(method) \(path): \(problem ?? "")")
            }
            expectError(try await site.send(.GET, "/api/v1/nothing-here", token: admin), 404, "route.unknown", "an unknown route")

            // None of it changed anything, and the audit log is intact.
            let after = try await Self.state(site, ignoringTokens: [])
            for key in before.keys.sorted() {
                #expect(before[key] == after[key], "\(key) changed:\nbefore \(before[key] ?? "-")\nafter  \(after[key] ?? "-")")
            }
            let verified = try await site.get("/api/v1/audit/verify")
            #expect(verified.object?["intact"] as? Bool == true, "\(verified)")
        }
    }

    // MARK: - 5. Audit

    @Test(
        "audit: every state-changing request of a known caller (refused ones too) and every login, with actor, action, source and result; no GET; tampering with the file shows"
    )
    func audit() async throws {
        try await APISite.with { site in
            let admin = site.adminToken
            let start = try await site.auditHead()
            // (request, what the audit entry says: actor, action, result; nil for GETs)
            var expected: [(String, String, String)] = []
            func call(
                _ method: HTTPVerb, _ path: String, _ json: String? = nil, token: String?, audited: (String, String, String)?
            ) async throws -> APIAnswer {
                let answer = try await site.send(method, path, json: json, token: token)
                if let audited { expected.append(audited) }
                return answer
            }
            let created = try await call(
                .POST, "/api/v1/users", #"{"name":"auditee","password":"auditee password","roles":["analyst"]}"#, token: admin,
                audited: ("chief", "POST /api/v1/users", "201")
            )
            try #require(created.status == 201, "\(created)")
            _ = try await call(.GET, "/api/v1/users", token: admin, audited: nil)
            _ = try await call(
                .POST, "/api/v1/login", #"{"user":"auditee","password":"not the password"}"#, token: nil,
                audited: ("auditee", "POST /api/v1/login", "401 auth.failed")
            )
            let login = try await call(
                .POST, "/api/v1/login", #"{"user":"auditee","password":"auditee password","token":{"name":"audit","days":1}}"#, token: nil,
                audited: ("auditee", "POST /api/v1/login", "201")
            )
            let auditee = try #require(login.object?["secret"] as? String, "\(login)")
            _ = try await call(.GET, "/api/v1/me", token: auditee, audited: nil)
            _ = try await call(.GET, "/api/v1/audit", token: auditee, audited: nil)
            _ = try await call(
                .PATCH, "/api/v1/settings", #"{"sessionHours":1}"#, token: auditee,
                audited: ("auditee", "PATCH /api/v1/settings", "403 auth.forbidden")
            )
            _ = try await call(
                .POST, "/api/v1/incidents", #"{"title":"not mine to declare","severity":"HIGH"}"#, token: auditee,
                audited: ("auditee", "POST /api/v1/incidents", "403 auth.forbidden")
            )
            _ = try await call(
                .DELETE, "/api/v1/users/auditee?dryRun=true", token: admin, audited: ("chief", "DELETE /api/v1/users/{name}", "200")
            )
            _ = try await call(
                .PATCH, "/api/v1/applications/none", "{}", token: admin,
                audited: ("chief", "PATCH /api/v1/applications/{name}", "404 application.unknown")
            )
            // Anonymous requests without valid credentials are refused and not recorded (noise anyone could make).
            _ = try await call(.POST, "/api/v1/launches", #"{"mode":"TEST","all":true}"#, token: nil, audited: nil)
            _ = try await call(.POST, "/api/v1/launches", #"{"mode":"TEST","all":true}"#, token: "lbk1_forged", audited: nil)
            _ = try await call(.GET, "/api/v1/no-such-route", token: admin, audited: nil)
            let unknownRouteIndex = expected.count
            _ = try await call(
                .POST, "/api/v1/no-such-route", "{}", token: admin, audited: ("chief", "POST /api/v1/no-such-route", "404 route.unknown")
            )
            _ = try await call(.POST, "/api/v1/logout", token: auditee, audited: ("auditee", "POST /api/v1/logout", "200"))

            let entries = try await site.auditEntries(afterSeq: start)
            #expect(entries.count == expected.count, "\(expected.count) state-changing requests, \(entries.count) entries: \(entries)")
            for (index, (entry, want)) in zip(entries, expected).enumerated() {
                let actor = entry["actor"] as? String ?? ""
                let action = entry["action"] as? String ?? ""
                let result = entry["result"] as? String ?? ""
                let source = entry["source"] as? String ?? ""
                #expect(actor == want.0 && result == want.2 && source == "127.0.0.1", "entry \(entry), expected \(want)")
                #expect(action == want.1, "entry \(index) (\(index == unknownRouteIndex ? "an unknown route" : "a route")): \(entry), expected \(want)")
            }
            let intact = try await site.get("/api/v1/audit/verify")
            #expect(intact.object?["intact"] as? Bool == true, "\(intact)")
            let cliIntact = try site.lifeboat(["audit", "verify", "--data", site.data])
            #expect(cliIntact.status == 0 && cliIntact.stdout.contains("intact"), "\(cliIntact.stdout) \(cliIntact.stderr)")

            // Tamper with the file: edit, delete, swap; restore in between from a copy of the rows.
            let head = try await site.auditHead()
            try #require(head >= 8, "too few entries to tamper with: \(head)")
            let middle = head / 2
            let backup = site.replication.dir.child("audit-backup.sqlite")
            try site.sqlite("ATTACH '\(backup)' AS saved; CREATE TABLE saved.audit AS SELECT * FROM main.audit_log;")
            let restore = """
                ATTACH '\(backup)' AS saved;
                BEGIN; DELETE FROM main.audit_log; INSERT INTO main.audit_log SELECT * FROM saved.audit; COMMIT;
                """
            let tampering: [(what: String, sql: String, kind: String, seqs: [Int64])] = [
                ("an edited actor", "UPDATE audit_log SET actor = 'mallory' WHERE seq = \(middle);", "edited", [middle]),
                ("a deleted entry", "DELETE FROM audit_log WHERE seq = \(middle);", "deleted", [middle]),
                (
                    "two swapped entries",
                    """
                    BEGIN; UPDATE audit_log SET seq = -seq WHERE seq IN (\(middle), \(middle + 1));
                    UPDATE audit_log SET seq = CASE seq WHEN -\(middle) THEN \(middle + 1) ELSE \(middle) END WHERE seq < 0; COMMIT;
                    """,
                    "reordered", [middle, middle + 1]
                ),
            ]
            for step in tampering {
                try site.sqlite(step.sql)
                let cli = try site.lifeboat(["audit", "verify", "--data", site.data])
                #expect(cli.status == 1, "\(step.what): lifeboat audit verify exited \(cli.status): \(cli.stdout) \(cli.stderr)")
                #expect(cli.stdout.contains("TAMPERED"), "\(step.what): \(cli.stdout)")
                for seq in step.seqs {
                    #expect(cli.stdout.contains("entry \(seq): \(step.kind)"), "\(step.what): \(cli.stdout)")
                }
                let api = try await site.get("/api/v1/audit/verify")
                #expect(api.object?["intact"] as? Bool == false, "\(step.what): \(api)")
                let problems = api.object?["problems"] as? [[String: Any]] ?? []
                let found = Set(problems.map { "\($0["seq"] as? Int ?? -1) \($0["kind"] as? String ?? "")" })
                for seq in step.seqs {
                    #expect(found.contains("\(seq) \(step.kind)"), "\(step.what): \(api)")
                }
                #expect(problems.allSatisfy { !($0["message"] as? String ?? "").isEmpty }, "\(api)")

                try site.sqlite(restore)
                let restored = try await site.get("/api/v1/audit/verify")
                #expect(restored.object?["intact"] as? Bool == true, "after restoring from \(step.what): \(restored)")
            }
            let cliAfter = try site.lifeboat(["audit", "verify", "--data", site.data])
            #expect(cliAfter.status == 0, "\(cliAfter.stdout) \(cliAfter.stderr)")
        }
    }

    // MARK: - 6. Plain HTTP

    @Test("plain HTTP is refused on a non-loopback address and served on loopback")
    func plainHTTP() async throws {
        let site = try ReplicationSite()
        let common = ["server", "run", "--data", site.data, "--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--api-plain-http"]
        let refused = try APIProcess.run(ReplicationSite.binary, common + ["--api-listen", "0.0.0.0:0"], input: nil, timeout: 30)
        #expect(refused.status != 0, "plain HTTP on 0.0.0.0 started (or timed out): \(refused.stderr)")
        #expect(refused.stderr.contains("loopback"), "the refusal does not mention loopback: \(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: site.data + "/api.address"), "an API address was written")

        let log = site.dir.child("plain.log")
        let server = try ReplicationSite.background(common + ["--api-listen", "127.0.0.1:0"], log: log)
        defer {
            if server.isRunning {
                server.terminate()
                server.waitUntilExit()
            }
        }
        var address = ""
        let deadline = Date().addingTimeInterval(30)
        while address.isEmpty && Date() < deadline && server.isRunning {
            address = ((try? String(contentsOfFile: site.data + "/api.address", encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if address.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        let serverLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        try #require(address.hasPrefix("http://127.0.0.1:"), "api.address '\(address)': \(serverLog)")
        let client = try APIClient(baseURL: address, token: nil, caPEM: nil)
        do {
            let health = try await client.raw(.GET, "/api/v1/health", authorized: false)
            let text = String(decoding: health.body, as: UTF8.self)
            #expect(health.status == 200 && text.contains("\"ok\""), "GET /api/v1/health over plain HTTP: \(health.status) \(text)")
            let protected = try await client.raw(.GET, "/api/v1/users", authorized: false)
            #expect(protected.status == 401, "plain HTTP still needs a login: \(protected.status)")
            await client.shutdown()
        } catch {
            await client.shutdown()
            throw error
        }
    }

    // MARK: - 7. The OpenAPI document

    @Test(
        "openapi.json lists exactly the server's routes, and marks exactly the public ones as needing no security"
    )
    func openAPIDocument() async throws {
        try await APISite.with { site in
            let answer = try await site.send(.GET, "/api/v1/openapi.json")
            try #require(answer.status == 200, "\(answer.status)")
            let document = try #require(answer.object, "not a JSON object")
            let paths = try #require(document["paths"] as? [String: Any], "no paths")
            let global = document["security"] as? [Any] ?? []
            #expect(!global.isEmpty, "the document has no default security: an operation without its own would read as public")
            let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
            let shared = (document["components"] as? [String: Any])?["parameters"] as? [String: Any] ?? [:]
            /// A parameter object, with a `$ref` to components.parameters resolved.
            func resolved(_ parameter: Any) -> [String: Any] {
                let object = parameter as? [String: Any] ?? [:]
                guard let reference = object["$ref"] as? String else { return object }
                let name = String(reference.split(separator: "/").last ?? "")
                return shared[name] as? [String: Any] ?? [:]
            }
            var documented: Set<String> = []
            var withoutDryRun: [String] = []
            var problems: [String] = []
            let routes = Dictionary(ControlPlaneServer.routes.map { ($0.description, $0) }, uniquingKeysWith: { a, _ in a })
            for (path, item) in paths {
                guard let operations = item as? [String: Any] else { continue }
                for (key, value) in operations where methods.contains(key) {
                    let name = "\(key.uppercased()) \(path)"
                    documented.insert(name)
                    guard let route = routes[name], let operation = value as? [String: Any] else { continue }
                    let security = operation["security"] as? [Any]
                    if route.permission == nil, security?.isEmpty != true {
                        problems.append("\(name) is public but its operation does not say security: []")
                    }
                    if route.permission != nil, security?.isEmpty == true {
                        problems.append("\(name) needs \(route.permission?.rawValue ?? "") but says security: []")
                    }
                    // Every state-changing route but login and logout takes ?dryRun (the matrix shows they honour it).
                    let parameters = ((operation["parameters"] as? [Any] ?? []) + (operations["parameters"] as? [Any] ?? [])).map(resolved)
                    let takesDryRun = parameters.contains { $0["name"] as? String == "dryRun" && $0["in"] as? String == "query" }
                    if key != "get", !["POST /api/v1/login", "POST /api/v1/logout"].contains(name), !takesDryRun {
                        withoutDryRun.append(name)
                    }
                }
            }
            let served = Set(routes.keys)
            #expect(
                documented == served,
                "only documented: \(documented.subtracting(served).sorted()); only served: \(served.subtracting(documented).sorted())"
            )
            #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
            #expect(ControlPlaneServer.routes.count == served.count, "a route is listed twice")
            #expect(withoutDryRun.isEmpty, "no dryRun parameter documented: \(withoutDryRun)")
        }
    }
}

// MARK: - Helpers

/// Expects an error answer with this status and code, well formed, whose message names `words`.
fileprivate func expectError(
    _ answer: APIAnswer, _ status: Int, _ code: String, mentioning words: [String] = [], _ what: String,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) {
    #expect(
        answer.status == status && answer.code == code, "\(what): expected \(status) \(code), got \(answer)",
        sourceLocation: sourceLocation
    )
    let problem = answer.errorShapeProblem
    #expect(problem == nil, "\(what): \(problem ?? "")", sourceLocation: sourceLocation)
    let message = answer.message
    for word in words {
        #expect(message.contains(word), "\(what): the message does not name \(word): \(message)", sourceLocation: sourceLocation)
    }
}

/// Someone calling the API in the matrix: no credentials, a dead token, or a user with roles.
fileprivate struct MatrixCaller {
    var label: String
    /// nil when the credentials do not authenticate.
    var user: String?
    var roles: Set<Role>
    var token: String?
    var tokenId: String?
    /// A second token of the same user for POST /logout (which revokes the token it is called with).
    var spare: String?
}

/// What a caller should get.
fileprivate enum MatrixExpectation: String {
    /// A public route: anything but 401 and 403.
    case answered = "any"
    /// 401 with an `auth.` code.
    case unauthenticated = "401"
    /// 403 `auth.forbidden`.
    case forbidden = "403"
    /// Authorized: not 401, not a 403 with an `auth.` code, no server error.
    case allowed = "ok"
    /// Someone else's token, to a caller who may not administer: 404 as if it did not exist.
    case hidden = "404"

    func isMet(by answer: APIAnswer) -> Bool {
        switch self {
        case .answered: answer.status != 401 && answer.status != 403 && answer.status < 500
        case .unauthenticated: answer.status == 401 && answer.code.hasPrefix("auth.")
        case .forbidden: answer.status == 403 && answer.code == "auth.forbidden"
        case .allowed: answer.status != 401 && !(answer.status == 403 && answer.code.hasPrefix("auth.")) && answer.status < 500
        case .hidden: answer.status == 404 && answer.code == "token.unknown"
        }
    }
}

/// One request of the matrix.
fileprivate struct MatrixCase {
    var label: String
    var route: RouteSpec
    var method: HTTPVerb
    var path: (MatrixCaller) -> String
    var body: String?
    var permission: Permission?
    var usesSpareToken = false
    var hiddenUnlessAdmin = false

    func expectation(for caller: MatrixCaller) -> MatrixExpectation {
        guard let permission else { return .answered }
        guard caller.user != nil else { return .unauthenticated }
        guard permission.granted(to: caller.roles) else { return .forbidden }
        if hiddenUnlessAdmin && !Permission.administer.granted(to: caller.roles) { return .hidden }
        return .allowed
    }
}

fileprivate struct MatrixCell {
    var status: Int
    var code: String
    var expected: MatrixExpectation
    var met: Bool
}
