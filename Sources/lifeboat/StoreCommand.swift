import ArgumentParser
import Catalog
import ReplicationServer
import LifeboatCore
import StagingStore

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Create, fill, inspect, verify and prune a staging store.",
        subcommands: [
            StoreInit.self, StoreIngest.self, StorePoints.self, StoreStats.self, StoreExport.self,
            StoreVerify.self, StorePrune.self, StorePin.self, StoreUnpin.self,
        ]
    )
}

/// Where the store is and how to open it.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "The store directory (or set LIFEBOAT_STORE).")
    var store: String?

    @Option(
        name: .long,
        help: "The master key file (or set LIFEBOAT_KEY_FILE). Default: the store directory's path + '.key'."
    )
    var keyFile: String?

    @Option(
        name: .long,
        help: "Read the passphrase from this file instead of using a key file (or set LIFEBOAT_PASSPHRASE)."
    )
    var passphraseFile: String?

    func storePath() throws -> String {
        guard let path = store ?? ProcessEnvironment.value("LIFEBOAT_STORE") else {
            throw LifeboatError("cli.no-store", "no store given: use --store DIR or set LIFEBOAT_STORE")
        }
        return path
    }

    func keySource() throws -> MasterKeySource {
        if let passphraseFile {
            let bytes = try readSmallFile(passphraseFile)
            var text = String(decoding: bytes, as: UTF8.self)
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            guard !text.isEmpty else {
                throw LifeboatError("cli.empty-passphrase", "the passphrase file \(passphraseFile) is empty")
            }
            return .passphrase(text)
        }
        if keyFile == nil, let pass = ProcessEnvironment.value("LIFEBOAT_PASSPHRASE"), !pass.isEmpty {
            return .passphrase(pass)
        }
        var path = try storePath()
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return .keyFile(path: keyFile ?? ProcessEnvironment.value("LIFEBOAT_KEY_FILE") ?? path + ".key")
    }

    func open(_ access: Store.Access) throws -> Store {
        try Store.open(LocalDirectoryBackend(root: try storePath()), key: try keySource(), access: access)
    }
}

func readSmallFile(_ path: String) throws -> [UInt8] {
    guard let f = fopen(path, "rb") else {
        throw LifeboatError("cli.unreadable", "cannot read \(path)")
    }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out += buf[0..<n]
        if out.count > 1 << 20 { throw LifeboatError("cli.too-large", "\(path) is larger than 1 MiB") }
    }
    return out
}

#if canImport(Glibc)
@preconcurrency import Glibc
#endif

struct StoreInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a new encrypted store (and its key file, mode 0600, unless a passphrase is used)."
    )
    @OptionGroup var options: StoreOptions

    func run() throws {
        try lifeboat.run {
            let path = try options.storePath()
            let summary = try Store.create(at: LocalDirectoryBackend(root: path), key: try options.keySource())
            print("created store \(summary.id) at \(summary.location)")
            if let key = summary.createdKeyFile {
                print("created key file \(key) (mode 0600): keep a copy somewhere safe; without it the store cannot be read")
            }
        }
    }
}

struct StoreIngest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Take image files or block devices as the next state of a machine's volumes; store only what changed.",
        discussion: "Each FILE is one volume. Volumes are named by --volume in order, or by the file's base name."
    )
    @OptionGroup var options: StoreOptions
    @Option(help: "The machine the volumes belong to.") var machine: String
    @Option(name: .customLong("volume"), help: "Volume name for each FILE, in order.") var volumeNames: [String] = []
    @Flag(help: "Print the commit as JSON.") var json = false
    @Argument(help: "Image files or block devices.") var files: [String]

    func run() throws {
        try lifeboat.run {
            guard !files.isEmpty else { throw LifeboatError("cli.usage", "give at least one FILE to ingest") }
            guard volumeNames.isEmpty || volumeNames.count == files.count else {
                throw LifeboatError(
                    "cli.usage",
                    "give one --volume per FILE (\(volumeNames.count) names for \(files.count) files)"
                )
            }
            let volumes = files.enumerated().map { i, f in
                (name: volumeNames.isEmpty ? String(f.split(separator: "/").last ?? Substring(f)) : volumeNames[i], path: f)
            }
            let store = try options.open(.write)
            defer { store.close() }
            let record = try store.ingest(machine: machine, volumes: volumes)
            if json {
                print(
                    "{\"point\":\(jsonString(record.id.description)),\"machine\":\(jsonString(record.machine)),\"time\":\(jsonString(record.time.rfc3339)),\"changed_bytes\":\(record.changedBytes),\"stored_bytes\":\(record.storedBytes)}"
                )
            } else {
                print(
                    "committed point \(record.id) of \(record.machine) at \(record.time): \(ByteFormatting.binary(Int64(record.changedBytes))) changed, \(ByteFormatting.binary(Int64(record.storedBytes))) stored"
                )
            }
        }
    }
}

struct StorePoints: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "points", abstract: "List recovery points.")
    @OptionGroup var options: StoreOptions
    @Option(help: "Only this machine.") var machine: String?
    @Flag(help: "JSON output.") var json = false

    func run() throws {
        try lifeboat.run {
            let store = try options.open(.read)
            defer { store.close() }
            let commits = store.commits(machine: machine)
            let pinned = Set(store.pins().map(\.point))
            if json {
                let items = commits.map { c in
                    let vols = c.volumes.map { "{\"name\":\(jsonString($0.name)),\"size\":\($0.size)}" }.joined(separator: ",")
                    return "{\"point\":\(jsonString(c.id.description)),\"machine\":\(jsonString(c.machine)),\"time\":\(jsonString(c.time.rfc3339)),\"sequence\":\(c.sequence),\"changed_bytes\":\(c.changedBytes),\"stored_bytes\":\(c.storedBytes),\"pinned\":\(pinned.contains(c.id)),\"crash_consistent\":\(c.crashConsistent),\"volumes\":[\(vols)]}"
                }
                print("[" + items.joined(separator: ",\n") + "]")
                return
            }
            printTable(
                ["POINT", "MACHINE", "TIME", "VOLUMES", "CHANGED", "STORED", "PINNED", "CONSISTENT"],
                commits.reversed().map { c in
                    [
                        c.id.description, c.machine, c.time.rfc3339,
                        c.volumes.map { "\($0.name):\(ByteFormatting.binary($0.size))" }.joined(separator: ","),
                        ByteFormatting.binary(Int64(c.changedBytes)), ByteFormatting.binary(Int64(c.storedBytes)),
                        pinned.contains(c.id) ? "yes" : "",
                        c.crashConsistent ? "yes" : "NO",
                    ]
                }
            )
        }
    }
}

struct StoreStats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Show the store's size and contents.")
    @OptionGroup var options: StoreOptions
    @Flag(help: "JSON output.") var json = false

    func run() throws {
        try lifeboat.run {
            let store = try options.open(.read)
            defer { store.close() }
            let s = try store.stats()
            if json {
                print(
                    "{\"machines\":\(s.machines),\"points\":\(s.points),\"packs\":\(s.packs),\"pack_bytes\":\(s.packBytes),\"blobs\":\(s.blobs),\"chunk_bytes_raw\":\(s.chunkRawBytes),\"latest_volume_bytes\":\(s.latestVolumeBytes),\"metadata_bytes\":\(s.metadataBytes),\"deferred_blobs\":\(s.deferredBlobs)}"
                )
                return
            }
            print("store:            \(store.backend.location)")
            print("machines:         \(s.machines)")
            print("recovery points:  \(s.points)")
            print("packs:            \(s.packs) (\(ByteFormatting.binary(s.packBytes)))")
            print("blobs:            \(s.blobs) (\(ByteFormatting.binary(s.chunkRawBytes)) of data before compression)")
            print("metadata files:   \(ByteFormatting.binary(s.metadataBytes))")
            print("not yet compressed (landed raw, compressed in the background): \(s.deferredBlobs) blobs")
            print("protected volumes (latest points): \(ByteFormatting.binary(s.latestVolumeBytes))")
        }
    }
}

struct StoreExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a volume at a recovery point as a sparse raw file or a qcow2 image."
    )
    enum Format: String, ExpressibleByArgument { case raw, qcow2 }
    @OptionGroup var options: StoreOptions
    @Option var machine: String
    @Option var volume: String
    @Option(help: "latest, a point id, or an RFC 3339 time (newest point at or before it).") var point = "latest"
    @Option var output: String
    @Option var format: Format = .raw

    func run() throws {
        try lifeboat.run {
            let store = try options.open(.read)
            defer { store.close() }
            let reader = try store.reader(machine: machine, volume: volume, point: point)
            try exportVolume(store, reader, machine: machine, volume: volume, format: format, output: output)
        }
    }
}

/// Writes a volume at a point as a sparse raw file or (through qemu-img) a qcow2 image, and says what it wrote.
/// Shared by `store export` and `export`.
func exportVolume(_ store: Store, _ reader: VolumeReader, machine: String, volume: String, format: StoreExport.Format, output: String) throws {
    switch format {
    case .raw:
        let n = try store.export(reader, to: output)
        print("exported \(machine)/\(volume) at point \(reader.commit.id) (\(reader.commit.time)) to \(output): \(ByteFormatting.binary(reader.size)), \(ByteFormatting.binary(n)) of data")
    case .qcow2:
        let raw = output + ".raw-export"
        defer { unlink(raw) }
        try store.export(reader, to: raw)
        try runProcess("/usr/bin/qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, output])
        print("exported \(machine)/\(volume) at point \(reader.commit.id) (\(reader.commit.time)) to \(output) (qcow2)")
    }
}

func runProcess(_ path: String, _ arguments: [String]) throws {
    guard access(path, X_OK) == 0 else {
        throw LifeboatError("cli.missing-tool", "\(path) is not installed (Debian: apt-get install qemu-utils)")
    }
    var pid: pid_t = 0
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    let rc = posix_spawn(&pid, path, nil, nil, argv, environ)
    guard rc == 0 else { throw LifeboatError("cli.spawn", "could not start \(path): error \(rc)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    guard status == 0 else {
        throw LifeboatError("cli.tool-failed", "\(path) \(arguments.joined(separator: " ")) failed (status \(status))")
    }
}

struct StoreVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Read and authenticate everything; report what is damaged and which points it affects.",
        discussion: "Exits 0 when the store is intact, 2 when damage was found, 1 on other errors."
    )
    @OptionGroup var options: StoreOptions
    @Flag(help: "Check structure and metadata only; do not read every chunk.") var metadataOnly = false

    func run() throws {
        var damaged = false
        try lifeboat.run {
            let store = try options.open(.read)
            defer { store.close() }
            let report = try store.verify(readData: !metadataOnly)
            print("checked \(report.packsChecked) packs, \(report.blobsChecked) blobs (\(ByteFormatting.binary(report.bytesRead)) read), \(report.pointsChecked) points")
            if report.problems.isEmpty {
                print("no damage found")
                return
            }
            damaged = true
            print("DAMAGE FOUND: \(report.problems.count) problem(s)")
            for p in report.problems { print("  - \(p)") }
            if !report.affected.isEmpty {
                print("affected recovery points:")
                for a in report.affected {
                    print("  - machine \(a.machine) volume \(a.volume) point \(a.point) (\(a.time.rfc3339)): \(a.damagedBytes) bytes unreadable, first at offset \(a.firstOffset)")
                }
            }
            let clean = report.cleanPoints
            if !clean.isEmpty {
                print("intact points per machine (newest): " + clean.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ", "))
            }
        }
        if damaged { throw ExitCode(2) }
    }
}

struct StorePrune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Apply the point-in-time policy: drop points it no longer keeps and reclaim their space.",
        discussion: """
            With --data DIR (a server's data directory, server stopped) the store is DIR/store and the policy is the \
            one in the server's settings (`lifeboat settings`), unless rules are given here. Otherwise the default \
            policy: every commit for 10 minutes, one per 10 minutes for 1 hour, hourly for 24 hours, daily for 7 days. \
            Pinned points always survive.
            """
    )
    @OptionGroup var options: StoreOptions
    @Option(name: .long, help: "A server's data directory: its store, and the PIT policy of its settings.") var data: String?
    @Option(help: "Keep every commit younger than this many minutes.") var keepAllMinutes: Int?
    @Option(
        name: .customLong("rule"),
        help: "A rule UNIT:INTERVAL:RETENTION, e.g. MINUTE:10:60, HOUR:1:24, DAY:1:7 (repeatable; replaces the defaults)."
    )
    var rules: [String] = []
    @Flag(help: "Show what would be removed; change nothing.") var dryRun = false

    func run() throws {
        try lifeboat.run {
            var policy = RetentionPolicy.default
            var options = self.options
            if let data {
                var dataOptions = DataOptions()
                dataOptions.data = data
                let catalog = try dataOptions.openCatalog()
                policy = try catalog.controlSettings().pitPolicy
                catalog.close()
                let layout = try dataOptions.layout
                options.store = layout.store
                options.keyFile = layout.storeKey
            }
            if let keepAllMinutes { policy.keepEveryCommitFor = Int64(keepAllMinutes) * 60 }
            if !rules.isEmpty { policy.rules = try rules.map(parseRule) }
            try policy.validate()
            let store = try options.open(dryRun ? .read : .maintenance)
            defer { store.close() }
            let report = try store.prune(policy: policy, dryRun: dryRun)
            print("\(dryRun ? "would remove" : "removed") \(report.removed.count) point(s), kept \(report.kept)")
            for c in report.removed { print("  - \(c.machine) \(c.id) \(c.time.rfc3339)") }
            if !dryRun {
                print("reclaimed \(ByteFormatting.binary(report.reclaimedBytes)): deleted \(report.packsDeleted) pack(s), rewrote \(report.packsRewritten)")
            }
        }
    }
}

struct StorePin: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pin", abstract: "Keep a point from retention.")
    @OptionGroup var options: StoreOptions
    @Option var machine: String
    @Option var point: String
    @Option(help: "Who holds the pin (e.g. a recovery instance).") var holder: String

    func run() throws {
        try lifeboat.run {
            let store = try options.open(.write)
            defer { store.close() }
            let c = try store.resolvePoint(point, machine: machine)
            try store.pin(c.id, holder: holder)
            print("pinned point \(c.id) of \(machine) for \(holder)")
        }
    }
}

struct StoreUnpin: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unpin", abstract: "Release a pin.")
    @OptionGroup var options: StoreOptions
    @Option var machine: String
    @Option var point: String
    @Option var holder: String

    func run() throws {
        try lifeboat.run {
            let store = try options.open(.write)
            defer { store.close() }
            let c = try store.resolvePoint(point, machine: machine)
            try store.unpin(c.id, holder: holder)
            print("unpinned point \(c.id) of \(machine) for \(holder)")
        }
    }
}
