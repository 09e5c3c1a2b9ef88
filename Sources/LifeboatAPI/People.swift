public import LifeboatCore

/// `POST /login`. Without `token`: a browser session (cookie). With `token`: an API token for scripts and the CLI.
public struct LoginRequest: Codable, Sendable, Equatable {
    public var user: String
    public var password: String
    public var token: NewTokenRequest?

    public init(user: String, password: String, token: NewTokenRequest? = nil) {
        self.user = user
        self.password = password
        self.token = token
    }
}

/// The answer to a session login: who, and the CSRF token to send in `X-CSRF-Token` with state-changing requests.
public struct SessionDTO: Codable, Sendable, Equatable {
    public var user: String
    public var roles: [Role]
    public var csrfToken: String
    public var expiresAt: String

    public init(user: String, roles: [Role], csrfToken: String, expiresAt: String) {
        self.user = user
        self.roles = roles
        self.csrfToken = csrfToken
        self.expiresAt = expiresAt
    }
}

/// `GET /me`.
public struct MeDTO: Codable, Sendable, Equatable {
    public var user: String
    public var roles: [Role]
    public var permissions: [Permission]
    /// `session` or `token`.
    public var authenticatedBy: String
    public var tokenId: String
    public var expiresAt: String

    public init(user: String, roles: [Role], permissions: [Permission], authenticatedBy: String, tokenId: String, expiresAt: String) {
        self.user = user
        self.roles = roles
        self.permissions = permissions
        self.authenticatedBy = authenticatedBy
        self.tokenId = tokenId
        self.expiresAt = expiresAt
    }
}

public struct UserDTO: Codable, Sendable, Equatable {
    public var name: String
    public var roles: [Role]
    public var createdAt: String
    public var passwordChangedAt: String
    public var disabled: Bool

    public init(name: String, roles: [Role], createdAt: String, passwordChangedAt: String, disabled: Bool) {
        self.name = name
        self.roles = roles
        self.createdAt = createdAt
        self.passwordChangedAt = passwordChangedAt
        self.disabled = disabled
    }
}

/// `POST /users`.
public struct NewUserRequest: Codable, Sendable, Equatable {
    public var name: String
    public var password: String
    public var roles: [Role]
    public var dryRun: Bool?

    public init(name: String, password: String, roles: [Role], dryRun: Bool? = nil) {
        self.name = name
        self.password = password
        self.roles = roles
        self.dryRun = dryRun
    }
}

/// `PATCH /users/{name}`: only the fields given change.
public struct UserUpdate: Codable, Sendable, Equatable {
    public var roles: [Role]?
    public var password: String?
    public var disabled: Bool?
    public var dryRun: Bool?

    public init(roles: [Role]? = nil, password: String? = nil, disabled: Bool? = nil, dryRun: Bool? = nil) {
        self.roles = roles
        self.password = password
        self.disabled = disabled
        self.dryRun = dryRun
    }
}

/// `POST /tokens` (and the `token` of a login): an API token of the caller.
public struct NewTokenRequest: Codable, Sendable, Equatable {
    public var name: String
    /// Days until it expires (1…366, default 90).
    public var days: Int?

    public init(name: String, days: Int? = nil) {
        self.name = name
        self.days = days
    }
}

public struct TokenDTO: Codable, Sendable, Equatable {
    public var id: String
    public var user: String
    public var name: String
    /// API or SESSION.
    public var kind: String
    public var createdAt: String
    public var expiresAt: String
    public var revokedAt: String?
    public var lastUsedAt: String?

    public init(
        id: String, user: String, name: String, kind: String, createdAt: String, expiresAt: String, revokedAt: String?,
        lastUsedAt: String?
    ) {
        self.id = id
        self.user = user
        self.name = name
        self.kind = kind
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.lastUsedAt = lastUsedAt
    }
}

/// A new API token: `secret` is shown once, only its hash is kept.
public struct IssuedTokenDTO: Codable, Sendable, Equatable {
    public var token: TokenDTO
    public var secret: String

    public init(token: TokenDTO, secret: String) {
        self.token = token
        self.secret = secret
    }
}

/// `POST /enrollment-tokens`: a one-time token an agent enrolls with.
public struct NewEnrollmentTokenRequest: Codable, Sendable, Equatable {
    public var expiresHours: Int?
    public var note: String?
    public var dryRun: Bool?

    public init(expiresHours: Int? = nil, note: String? = nil, dryRun: Bool? = nil) {
        self.expiresHours = expiresHours
        self.note = note
        self.dryRun = dryRun
    }
}

public struct EnrollmentTokenDTO: Codable, Sendable, Equatable {
    public var id: String
    public var createdAt: String
    public var expiresAt: String
    public var usedAt: String?
    public var usedBy: String?
    public var note: String?
    /// Only in the answer that creates it.
    public var token: String?

    public init(id: String, createdAt: String, expiresAt: String, usedAt: String?, usedBy: String?, note: String?, token: String?) {
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
        self.usedBy = usedBy
        self.note = note
        self.token = token
    }
}

/// `GET /access`: for every role, who holds it and what it may do.
public struct AccessRoleDTO: Codable, Sendable, Equatable {
    public var role: Role
    public var summary: String
    public var permissions: [Permission]
    /// Active users holding the role.
    public var holders: [String]

    public init(role: Role, summary: String, permissions: [Permission], holders: [String]) {
        self.role = role
        self.summary = summary
        self.permissions = permissions
        self.holders = holders
    }
}

/// `GET /access/check`: every role's holders, each verified live by read-only probes and dry-run requests
/// made as that user through the real API (nothing changes).
public struct AccessCheckDTO: Codable, Sendable, Equatable {
    /// True when every role has at least one holder and every holder passed every probe.
    public var ok: Bool
    public var roles: [AccessRoleCheckDTO]

    public init(ok: Bool, roles: [AccessRoleCheckDTO]) {
        self.ok = ok
        self.roles = roles
    }
}

public struct AccessRoleCheckDTO: Codable, Sendable, Equatable {
    public var role: Role
    public var summary: String
    public var permissions: [Permission]
    public var holders: [AccessHolderCheckDTO]
    /// e.g. "nobody holds this role".
    public var problems: [String]

    public init(role: Role, summary: String, permissions: [Permission], holders: [AccessHolderCheckDTO], problems: [String]) {
        self.role = role
        self.summary = summary
        self.permissions = permissions
        self.holders = holders
        self.problems = problems
    }
}

public struct AccessHolderCheckDTO: Codable, Sendable, Equatable {
    public var user: String
    public var ok: Bool
    public var probes: [AccessProbeDTO]
    /// e.g. "locked out after failed logins for 120 s".
    public var problems: [String]

    public init(user: String, ok: Bool, probes: [AccessProbeDTO], problems: [String]) {
        self.user = user
        self.ok = ok
        self.probes = probes
        self.problems = problems
    }
}

public struct AccessProbeDTO: Codable, Sendable, Equatable {
    /// What the probe shows the holder can do (`launch a drill`).
    public var purpose: String
    public var method: String
    public var path: String
    public var dryRun: Bool
    public var status: Int
    public var code: String?
    public var ok: Bool

    public init(purpose: String, method: String, path: String, dryRun: Bool, status: Int, code: String?, ok: Bool) {
        self.purpose = purpose
        self.method = method
        self.path = path
        self.dryRun = dryRun
        self.status = status
        self.code = code
        self.ok = ok
    }
}
