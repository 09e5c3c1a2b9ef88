import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore

extension APIHandlers {
    func registerPeople(_ add: Add) {
        add(.get, "/api/v1/users") { _, _, _ in
            try JSONBody.response(try await blocking { try catalog.users() }.map(DTO.user))
        }

        add(.post, "/api/v1/users") { request, context, _ in
            let body = try await JSONBody.decode(NewUserRequest.self, from: request)
            context.audit.set(target: "user \(body.name)", detail: "roles \(body.roles.sorted().map(\.rawValue).joined(separator: ","))")
            try Names.validate(body.name, kind: "user")
            guard !body.roles.isEmpty else {
                throw APIError(.badRequest, "user.no-roles", "give the user at least one role: \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            try Self.checkPassword(body.password, user: body.name)
            if try await blocking({ try catalog.user(named: body.name) }) != nil {
                throw APIError(.conflict, "user.exists", "a user named '\(body.name)' exists already")
            }
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("create user \(body.name)") }
            let user = try await blocking { try catalog.createUser(name: body.name, password: body.password, roles: Set(body.roles)) }
            return try JSONBody.response(DTO.user(user), status: .created)
        }

        add(.get, "/api/v1/users/{name}") { _, context, _ in
            let name = try Self.parameter(context, "name")
            guard let user = try await blocking({ try catalog.user(named: name) }) else { throw APIError.notFound("user", name) }
            return try JSONBody.response(DTO.user(user))
        }

        add(.patch, "/api/v1/users/{name}") { request, context, _ in
            let name = try Self.parameter(context, "name")
            let body = try await JSONBody.decode(UserUpdate.self, from: request)
            var changes: [String] = []
            if let roles = body.roles { changes.append("roles \(roles.sorted().map(\.rawValue).joined(separator: ","))") }
            if body.password != nil { changes.append("password") }
            if let disabled = body.disabled { changes.append(disabled ? "disable" : "enable") }
            context.audit.set(target: "user \(name)", detail: changes.joined(separator: ", "))
            guard let existing = try await blocking({ try catalog.user(named: name) }) else { throw APIError.notFound("user", name) }
            if let roles = body.roles, roles.isEmpty {
                throw APIError(.badRequest, "user.no-roles", "a user needs at least one role (disable the user instead)")
            }
            if let password = body.password { try Self.checkPassword(password, user: name) }
            let losesAdmin =
                existing.roles.contains(.admin) && existing.isActive
                && ((body.roles.map { !$0.contains(.admin) } ?? false) || body.disabled == true)
            if losesAdmin, try await blocking({ try catalog.activeAdminCount() }) <= 1 {
                throw APIError(.conflict, "user.last-admin", "\(name) is the last active admin: make another user admin first")
            }
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("change user \(name): \(changes.joined(separator: ", "))") }
            let user = try await blocking { () -> UserRecord in
                if let roles = body.roles { _ = try catalog.setRoles(user: name, roles: Set(roles)) }
                if let password = body.password { try catalog.setPassword(user: name, password: password) }
                if let disabled = body.disabled { _ = try catalog.setUserDisabled(name, disabled: disabled) }
                return try catalog.user(named: name)!
            }
            return try JSONBody.response(DTO.user(user))
        }

        add(.delete, "/api/v1/users/{name}") { request, context, principal in
            let name = try Self.parameter(context, "name")
            context.audit.set(target: "user \(name)")
            guard let existing = try await blocking({ try catalog.user(named: name) }) else { throw APIError.notFound("user", name) }
            if existing.roles.contains(.admin), existing.isActive, try await blocking({ try catalog.activeAdminCount() }) <= 1 {
                throw APIError(.conflict, "user.last-admin", "\(name) is the last active admin: make another user admin first")
            }
            if try Self.isDryRun(request) { return try Self.dryRun("delete user \(name)") }
            try await blocking { try catalog.deleteUser(name) }
            return try JSONBody.response(["deleted": name])
        }

        add(.get, "/api/v1/tokens") { request, _, principal in
            let principal = principal!
            let user = Self.query(request, "user")
            let everyone = try Self.flag(request, "all")
            if (user != nil && user != principal.user) || everyone { try Self.require(.readAudit, principal) }
            let tokens = try await blocking { try catalog.accessTokens(user: everyone ? nil : (user ?? principal.user)) }
            return try JSONBody.response(tokens.map(DTO.token))
        }

        add(.post, "/api/v1/tokens") { request, context, principal in
            let body = try await JSONBody.decode(NewTokenRequest.self, from: request)
            let days = body.days ?? 90
            guard (1...366).contains(days) else {
                throw APIError(.badRequest, "request.invalid-field", "days must be 1 to 366, got \(days)")
            }
            try Self.checkTokenName(body.name)
            if try Self.isDryRun(request) { return try Self.dryRun("create an API token '\(body.name)' for \(days) days") }
            let user = principal!.user
            let issued = try await blocking {
                try catalog.createAccessToken(user: user, name: body.name, kind: .api, validFor: Int64(days) * 86_400)
            }
            context.audit.set(target: "token \(issued.record.id)", detail: "api token '\(body.name)' for \(days) days")
            return try JSONBody.response(IssuedTokenDTO(token: DTO.token(issued.record), secret: issued.secret), status: .created)
        }

        add(.delete, "/api/v1/tokens/{id}") { request, context, principal in
            let id = try Self.parameter(context, "id")
            context.audit.set(target: "token \(id)")
            // Someone else's token is reported as missing unless the caller administers: ids do not leak.
            guard let token = try await blocking({ try catalog.accessToken(id: id) }),
                token.user == principal!.user || principal!.may(.administer)
            else { throw APIError.notFound("token", id) }
            if try Self.isDryRun(request) { return try Self.dryRun("revoke token \(id) of \(token.user)") }
            let revoked = try await blocking { try catalog.revokeAccessToken(id: id) }
            return try JSONBody.response(DTO.token(revoked))
        }

        add(.get, "/api/v1/enrollment-tokens") { _, _, _ in
            try JSONBody.response(try await blocking { try catalog.enrollmentTokens() }.map(DTO.enrollmentToken))
        }

        add(.post, "/api/v1/enrollment-tokens") { request, context, _ in
            let body = try await JSONBody.decode(NewEnrollmentTokenRequest.self, from: request)
            let hours = body.expiresHours ?? 24
            guard (1...8760).contains(hours) else {
                throw APIError(.badRequest, "request.invalid-field", "expiresHours must be 1 to 8760, got \(hours)")
            }
            guard let fingerprint = enrollmentFingerprint else {
                throw APIError(.internalServerError, "server.no-ca", "the server has no CA fingerprint configured")
            }
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("create an enrollment token valid for \(hours) h") }
            let (token, record) = try await blocking { () -> (EnrollmentToken, EnrollmentTokenRecord?) in
                let token = try catalog.createEnrollmentToken(validFor: Int64(hours) * 3600, note: body.note)
                return (token, try catalog.enrollmentTokens().first { $0.id == token.id })
            }
            context.audit.set(target: "enrollment token \(token.id)", detail: "valid \(hours) h")
            var dto =
                record.map(DTO.enrollmentToken)
                ?? EnrollmentTokenDTO(
                    id: token.id, createdAt: now.rfc3339, expiresAt: token.expiresAt.rfc3339, usedAt: nil, usedBy: nil, note: body.note,
                    token: nil
                )
            // The text `lifeboat agent enroll --token` takes (ReplicationTransport.EnrollmentTokenText).
            dto.token = "lbt1-\(token.secret)-\(fingerprint)"
            return try JSONBody.response(dto, status: .created)
        }

        add(.get, "/api/v1/access/check") { _, _, _ in
            let check = AccessCheck(catalog: catalog, throttle: throttle, responder: responder)
            return try JSONBody.response(try await check.run(logger: logger))
        }

        add(.get, "/api/v1/access") { _, _, _ in
            let users = try await blocking { try catalog.users() }
            return try JSONBody.response(
                Role.allCases.map { role in
                    AccessRoleDTO(
                        role: role,
                        summary: role.summary,
                        permissions: Permission.allCases.filter { $0.allowed.contains(role) },
                        holders: users.filter { $0.isActive && $0.roles.contains(role) }.map(\.name)
                    )
                }
            )
        }
    }

    /// - Throws: 400 `request.invalid-field` for an empty or overlong token name.
    static func checkTokenName(_ name: String) throws {
        guard !name.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, name.count <= 100 else {
            throw APIError(.badRequest, "request.invalid-field", "a token needs a name (1 to 100 characters) that says where it is used")
        }
    }

    /// - Throws: 400 `user.weak-password` for a password under 12 characters or equal to the user's name.
    static func checkPassword(_ password: String, user: String) throws {
        guard password.count >= 12, password != user else {
            throw APIError(.badRequest, "user.weak-password", "a password needs at least 12 characters and must not be the user's name")
        }
        guard password.count <= 1024 else {
            throw APIError(.badRequest, "user.weak-password", "a password may have at most 1024 characters")
        }
    }
}
