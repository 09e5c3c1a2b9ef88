import Catalog
import Hummingbird
import LifeboatAPI
import LifeboatCore
import NIOCore

extension APIHandlers {
    func registerAudit(_ add: Add) {
        add(.get, "/api/v1/audit") { request, _, _ in
            let paging = try Self.paging(request)
            let actor = Self.query(request, "actor")
            let action = Self.query(request, "action")
            let (entries, total) = try await blocking {
                (
                    try catalog.auditEntries(limit: paging.limit, offset: paging.offset, newestFirst: true, actor: actor, action: action),
                    try catalog.auditCount(actor: actor, action: action)
                )
            }
            return try JSONBody.response(Page(items: entries.map(DTO.audit), total: total, offset: paging.offset, limit: paging.limit))
        }

        add(.get, "/api/v1/audit/verify") { request, _, _ in
            let head = Self.query(request, "expectHead")
            let verification = try await blocking { try catalog.verifyAudit(expectHead: head) }
            return try JSONBody.response(DTO.verification(verification))
        }

        add(.get, "/metrics") { _, _, _ in
            let now = self.now
            let text = try await blocking { try metrics.render(catalog: catalog, store: store, now: now) }
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: text))
            )
        }
    }
}
