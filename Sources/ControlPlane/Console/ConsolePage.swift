import Foundation
import Hummingbird
import LifeboatCore
import NIOCore

/// The frame of every console page: the navigation the user's roles allow, who is logged in, flash messages.
struct ConsolePage {
    let title: String
    let active: String
    let principal: Principal?
    var flash: [(kind: String, text: String)] = []
    var body: String

    static let sections: [(path: String, label: String, permission: Permission)] = [
        ("/machines", "Machines", .read),
        ("/jobs", "Jobs", .read),
        ("/instances", "Recovery instances", .read),
        ("/applications", "Applications", .read),
        ("/incidents", "Incidents", .read),
        ("/users", "Users and roles", .readAudit),
        ("/audit", "Audit log", .readAudit),
        ("/settings", "Settings", .read),
    ]

    func render() -> String {
        var nav = ""
        if let principal {
            for section in Self.sections where principal.may(section.permission) {
                let current = section.path == active ? " aria-current=\"page\"" : ""
                nav += "<a href=\"\(section.path)\"\(current)>\(HTML.escape(section.label))</a>"
            }
        }
        var who = ""
        if let principal {
            let roles = principal.roles.sorted().map(\.rawValue).joined(separator: ", ")
            who = """
                <div class="who"><span>\(HTML.escape(principal.user)) · \(HTML.escape(roles))</span>\
                <form class="inline-form" method="post" action="/logout"><input type="hidden" name="csrf" value="\(HTML.escape(principal.csrf ?? ""))">\
                <button type="submit">Log out</button></form></div>
                """
        }
        let messages = flash.map { "<div class=\"flash \($0.kind)\" role=\"status\">\(HTML.escape($0.text))</div>" }.joined()
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(HTML.escape(title)) · Lifeboat</title>
            <link rel="stylesheet" href="/assets/console.css">
            <script src="/assets/console.js" defer></script>
            </head><body>
            <header><a class="brand" href="/machines">Lifeboat</a><nav aria-label="Sections">\(nav)</nav>\(who)</header>
            <main id="main">\(messages)\(body)</main>
            </body></html>
            """
    }

    func response(status: HTTPResponse.Status = .ok, started: ContinuousClock.Instant? = nil) -> Response {
        var headers: HTTPFields = [
            .contentType: "text/html; charset=utf-8",
            .cacheControl: "no-store",
            .contentSecurityPolicy: "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ]
        if let started {
            let elapsed = ContinuousClock.now - started
            let ms = Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000
            headers[.init("Server-Timing")!] = "app;dur=\(String(format: "%.1f", ms))"
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: render())))
    }
}

/// A redirect after a form post (303, so the browser follows with GET).
func seeOther(_ location: String) -> Response {
    Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
}
