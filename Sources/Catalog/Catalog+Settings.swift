import Foundation
import GRDB
import LifeboatCore

// Settings: JSON values under a key in the `settings` table. The control plane's live under `control`.

extension Catalog {
    static let controlSettingsKey = "control"

    /// The control plane's settings: the defaults until an admin sets them. Stored settings this build cannot
    /// read also give the defaults (the strict ones: recovery needs an incident), as unreadable launch settings do.
    public func controlSettings() throws -> ControlSettings {
        let text = try read { db in
            try String.fetchOne(
                db,
                sql: "SELECT value FROM settings WHERE key = ?",
                arguments: [Catalog.controlSettingsKey]
            )
        }
        guard let text else { return ControlSettings() }
        return (try? JSONDecoder().decode(ControlSettings.self, from: Data(text.utf8))) ?? ControlSettings()
    }

    /// Replaces the control plane's settings, validated first.
    ///
    /// - Throws: `settings.invalid` naming the field.
    public func setControlSettings(_ settings: ControlSettings) throws {
        try settings.validate()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: try encoder.encode(settings), as: UTF8.self)
        try write { db in
            try db.execute(
                sql:
                    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                arguments: [Catalog.controlSettingsKey, text]
            )
        }
    }
}
