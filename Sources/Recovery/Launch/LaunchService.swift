#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
public import Catalog
import Foundation
import LifeboatCore
public import Logging
import NIOPosix
public import ServiceLifecycle
public import StagingStore
import Synchronization

/// Runs launch and terminate jobs: the command line queues them in the catalog, this service (part of
/// `lifeboat server run`) claims them and works through every machine of a job at once.
///
/// A launch, per machine (DESIGN §6 "Launch"):
/// 1. SNAPSHOT: pin the point in the store for the instance (retention never removes it while it runs);
/// 2. CONVERSION: each volume becomes an NBD export of the point through the instance's own copy-on-write
///    overlay — instant, nothing copied — or, for a command launcher that wants images, an exported file;
/// 3. LAUNCH: the launcher starts the machine (QEMU here, or the operator's command);
/// 4. the acceptance checks run until they pass or time out; only then is the machine LAUNCHED, with its RTO
///    (job creation → checks passed). A failure stops the machine and releases its overlay and pin.
///
/// Recovery instances outlive the server process: QEMU runs in its own session and reconnects to the NBD
/// server; when the service starts again it re-exports the overlays of the instances still running and
/// finishes or fails the jobs a stopped server left behind.
public final class LaunchService: Service, Sendable {
    public struct Configuration: Sendable {
        /// Where instances keep their overlays, console logs and launcher output (`DATA/instances`).
        public var instancesDirectory: String
        /// How launched machines reach the NBD server (127.0.0.1 when it listens on every interface).
        public var nbdHost: String
        public var nbdPort: Int
        /// `ca-cert.pem` for QEMU when the NBD server requires TLS.
        public var nbdTLSDirectory: String?
        /// How often the catalog is polled for new jobs and running machines are looked at.
        public var pollInterval: Duration
        /// A file to write the NBD server's bound `HOST:PORT` into once it listens (for tools and tests).
        public var addressFile: String?

        public init(instancesDirectory: String, nbdHost: String, nbdPort: Int, nbdTLSDirectory: String? = nil, pollInterval: Duration = .milliseconds(250)) {
            self.instancesDirectory = instancesDirectory
            self.nbdHost = nbdHost
            self.nbdPort = nbdPort
            self.nbdTLSDirectory = nbdTLSDirectory
            self.pollInterval = pollInterval
        }
    }

    let configuration: Configuration
    let catalog: Catalog
    let store: Store
    let nbd: NBDServer
    let launchers: [String: any Launcher]
    let logger: Logger
    /// Instances whose overlays this process serves, by id.
    private let active = Mutex<[String: ActiveInstance]>([:])

    struct ActiveInstance: @unchecked Sendable {
        var overlays: [OverlayExport]
        var runtime: InstanceRuntime?
        var lastRunning: Bool?
    }

    public init(
        configuration: Configuration,
        catalog: Catalog,
        store: Store,
        nbd: NBDServer,
        launchers: [any Launcher] = [QEMULauncher(), CommandLauncher()],
        logger: Logger
    ) {
        self.configuration = configuration
        self.catalog = catalog
        self.store = store
        self.nbd = nbd
        self.launchers = Dictionary(launchers.map { ($0.kind, $0) }, uniquingKeysWith: { a, _ in a })
        self.logger = logger
    }

    public func run() async throws {
        try SystemCallsLite.makeDirectories(configuration.instancesDirectory)
        await reconcile()
        if let file = configuration.addressFile {
            for _ in 0..<200 where nbd.port == nil { try? await Task.sleep(for: .milliseconds(50)) }
            if let port = nbd.port {
                try? Data("\(Self.uriHost(configuration.nbdHost)):\(port)\n".utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
            }
        }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                var lastMonitor = ContinuousClock.now
                while !Task.isCancelled {
                    do {
                        while let job = try self.catalog.claimNextJob() {
                            group.addTask { await self.runJob(job) }
                        }
                    } catch {
                        self.logger.error("cannot read the job queue: \(error)")
                    }
                    if ContinuousClock.now - lastMonitor > .seconds(2) {
                        self.monitor()
                        lastMonitor = ContinuousClock.now
                    }
                    try? await Task.sleep(for: self.configuration.pollInterval)
                }
            }
        }
        // Running machines keep running (they may be production after a failover); their disks come back
        // with the next start. Flush the overlays' maps now.
        for instance in active.withLock({ Array($0.values) }) {
            for overlay in instance.overlays { try? overlay.flush() }
        }
    }

    // MARK: - Jobs

    func runJob(_ job: JobRecord) async {
        let what = job.type == .launch
            ? "\(job.mode?.rawValue ?? "") launch of \(job.items.map(\.machine).joined(separator: ", "))"
            : "terminate \(job.items.map(\.instance).joined(separator: ", "))"
        event(job.id, .jobStart, detail: what)
        await withTaskGroup(of: Void.self) { group in
            for item in job.items {
                group.addTask {
                    switch job.type {
                    case .launch: await self.launch(item, of: job)
                    case .terminate: await self.terminate(item, of: job)
                    }
                }
            }
        }
        let items = (try? catalog.job(id: job.id))?.items ?? job.items
        let summary = Dictionary(grouping: items, by: \.launchStatus).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
        event(job.id, .jobEnd, detail: summary.joined(separator: ", "))
        do {
            try catalog.completeJob(job.id)
        } catch {
            logger.error("cannot complete job \(job.id): \(error)")
        }
    }

    /// Launches one machine of a job (steps in the type's comment). Never throws: failures are recorded.
    func launch(_ item: JobItem, of job: JobRecord) async {
        let instance = item.instance
        let mode = job.mode ?? .test
        let clock = ContinuousClock()
        var pinned: PointID?
        var runtime: InstanceRuntime?
        var request: LaunchRequest?
        var launcher: (any Launcher)?
        do {
            try catalog.setJobItem(job: job.id, instance: instance, status: .inProgress)
            try catalog.setInstanceState(instance, .launching, reason: nil)
            guard let machine = try catalog.machine(named: item.machine), let point = item.point else {
                throw LifeboatError("launch.unknown-machine", "machine \(item.machine) is no longer known")
            }
            let settings = machine.launchSettings
            guard let chosen = launchers[settings.launcher.rawValue] else {
                throw LifeboatError("launch.no-launcher", "this server has no \(settings.launcher.rawValue) launcher")
            }
            launcher = chosen
            let directory = configuration.instancesDirectory + "/" + instance
            try SystemCallsLite.makeDirectories(directory)

            // SNAPSHOT: pin the point.
            let pointID = PointID(raw: point)
            event(job.id, .snapshotStart, item, detail: "pinning point \(pointID) (\(item.pointCaptureTime.map { "\($0)" } ?? "?"))")
            guard let commit = store.commit(pointID) else {
                event(job.id, .snapshotFail, item, detail: "point \(pointID) is gone", error: "the point was removed before the launch")
                throw LifeboatError("launch.point-gone", "point \(pointID) of \(item.machine) no longer exists (removed by retention?)")
            }
            try store.pin(pointID, holder: Self.pinHolder(instance))
            pinned = pointID
            event(job.id, .snapshotEnd, item, detail: "point \(pointID) pinned for \(instance)")

            // CONVERSION: disks.
            let volumes = commit.volumes.map(\.name).sorted()
            event(job.id, .conversionStart, item, detail: "\(volumes.count) volume(s): \(volumes.joined(separator: ", ")) via \(settings.launcher == .command && settings.diskDelivery != .nbd ? "\(settings.diskDelivery.rawValue) export" : "NBD + copy-on-write overlay")")
            let conversionStart = clock.now
            let disks = try await prepareDisks(commit: commit, instance: instance, directory: directory, settings: settings)
            event(job.id, .conversionEnd, item, detail: disks.map { $0.nbdURI ?? $0.imagePath ?? $0.volume }.joined(separator: " ") + " in \(Self.seconds(clock.now - conversionStart))")

            // LAUNCH.
            let req = LaunchRequest(
                instance: instance, job: job.id, machine: item.machine, mode: mode, point: point,
                pointCaptureTime: item.pointCaptureTime ?? commit.time, disks: disks, settings: settings,
                directory: directory
            )
            request = req
            event(job.id, .launchStart, item, detail: "\(chosen.kind) launcher, mode \(mode.rawValue)")
            let log: @Sendable (String) -> Void = { [self] line in event(job.id, .launcherOutput, item, detail: line) }
            let started = try await chosen.launch(req, log: log)
            runtime = started
            try catalog.setInstanceState(instance, .launching, reason: "checks running", runtime: try started.json())
            active.withLock { $0[instance, default: ActiveInstance(overlays: [])].runtime = started }
            var where_ = started.host.map { "reachable at \($0)" } ?? "no address"
            if !started.ports.isEmpty {
                where_ += ", ports " + started.ports.sorted { $0.key < $1.key }.map { "\($0.key)→\($0.value)" }.joined(separator: " ")
            }
            event(job.id, .machineStarted, item, detail: where_ + (settings.checks.isEmpty ? "; no acceptance checks configured: launched means started, not proven" : ""))

            // Acceptance checks.
            let runner = AcceptanceRunner(checks: settings.checks, target: CheckTarget(instance: instance, runtime: started))
            let deadline = clock.now + .seconds(settings.checkTimeoutSeconds)
            let failure = await runner.run(
                until: deadline,
                isAlive: { chosen.isRunning(started) },
                onPassed: { check, attempt in self.event(job.id, .checkPassed, item, detail: "\(check): \(attempt.detail)") }
            )
            captureConsole(started, job: job.id, item: item)
            if failure != nil && Task.isCancelled {
                throw LifeboatError("launch.interrupted", "the server stopped during the acceptance checks; launch again")
            }
            if let failure {
                event(job.id, .checkFailed, item, detail: "\(failure.check)", error: failure.attempt.detail)
                throw LifeboatError(
                    "launch.check-failed",
                    "acceptance check \(failure.check) did not pass within \(settings.checkTimeoutSeconds) s: \(failure.attempt.detail)"
                )
            }
            let rto = Timestamp.now().nanoseconds - job.createdAt.nanoseconds
            try catalog.setInstanceState(instance, .running, reason: nil)
            try catalog.setJobItem(job: job.id, instance: instance, status: .launched, rtoNanoseconds: rto)
            try catalog.recordLaunchOutcome(machine: item.machine, mode: mode, passed: true)
            active.withLock { $0[instance]?.lastRunning = true }
            event(job.id, .launchEnd, item, detail: "\(item.machine) launched from point \(pointID): RTO \(Self.seconds(.nanoseconds(rto)))")
        } catch {
            let text = (error as? LifeboatError)?.description ?? "\(error)"
            event(job.id, .launchFailed, item, detail: "\(item.machine) was not launched", error: text)
            // Release whatever was taken, in reverse order.
            if let launcher, let request {
                // Without a runtime the launcher may still have started something (a command that failed half-way,
                // a QEMU whose start was interrupted): terminate is idempotent, so ask it anyway.
                var leftover = runtime ?? InstanceRuntime(launcher: launcher.kind)
                if runtime == nil, launcher.kind == "qemu", let pid = DetachedProcess.find(marker: QEMULauncher.marker(instance: instance)).first {
                    leftover.pid = pid
                    leftover.processMarker = QEMULauncher.marker(instance: instance)
                }
                leftover.disks = request.disks
                try? await launcher.terminate(leftover, request: request, log: { [self] line in event(job.id, .launcherOutput, item, detail: line) })
            }
            releaseDisks(instance)
            if let pinned { try? store.unpin(pinned, holder: Self.pinHolder(instance)) }
            try? catalog.setInstanceState(instance, .failed, reason: text)
            try? catalog.setJobItem(job: job.id, instance: instance, status: .failed, error: text)
            try? catalog.recordLaunchOutcome(machine: item.machine, mode: mode, passed: false)
        }
    }

    /// Terminates one instance: stops the machine, drops its overlays, unpins its point.
    func terminate(_ item: JobItem, of job: JobRecord) async {
        let id = item.instance
        do {
            try catalog.setJobItem(job: job.id, instance: id, status: .inProgress)
            guard let record = try catalog.instance(id: id) else {
                throw LifeboatError("instance.unknown", "recovery instance \(id) is gone from the catalog")
            }
            event(job.id, .cleanupStart, item, detail: "terminating \(id) (\(record.machine), \(record.mode.rawValue), point \(PointID(raw: record.point)))")
            if let text = record.runtime, let runtime = try? InstanceRuntime(json: text) {
                guard let launcher = launchers[runtime.launcher] else {
                    throw LifeboatError("launch.no-launcher", "this server has no \(runtime.launcher) launcher to stop \(id)")
                }
                let settings = (try? catalog.machine(named: record.machine))??.launchSettings ?? LaunchSettings()
                let request = LaunchRequest(
                    instance: id, job: job.id, machine: record.machine, mode: record.mode, point: record.point,
                    pointCaptureTime: record.pointCaptureTime, disks: runtime.disks, settings: settings,
                    directory: configuration.instancesDirectory + "/" + id
                )
                try await launcher.terminate(runtime, request: request, log: { [self] line in event(job.id, .launcherOutput, item, detail: line) })
            }
            let dropped = releaseDisks(id)
            try store.unpin(PointID(raw: record.point), holder: Self.pinHolder(id))
            try catalog.setInstanceState(id, .terminated, reason: "terminated by job \(job.id)")
            try catalog.setJobItem(job: job.id, instance: id, status: .terminated)
            event(job.id, .cleanupEnd, item, detail: "\(id) terminated: machine stopped, \(dropped) overlay(s) dropped, point \(PointID(raw: record.point)) unpinned")
        } catch {
            let text = (error as? LifeboatError)?.description ?? "\(error)"
            event(job.id, .cleanupFail, item, detail: "\(id) was not terminated; run the terminate again", error: text)
            try? catalog.setInstanceState(id, .stopped, reason: "terminate failed: \(text)")
            try? catalog.setJobItem(job: job.id, instance: id, status: .failed, error: text)
        }
    }

    /// The last lines of the serial console (at most 4 KiB, escape sequences removed) as a job event.
    private func captureConsole(_ runtime: InstanceRuntime, job: String, item: JobItem) {
        guard let path = runtime.consoleLog, let bytes = try? readTail(path, limit: 4096), !bytes.isEmpty else { return }
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { ConsoleReader.clean(Array($0)) }
        if bytes.count == 4096, !lines.isEmpty { lines.removeFirst() }  // a partial first line
        while lines.last?.isEmpty == true { lines.removeLast() }
        event(job, .console, item, detail: "\(path) (last \(lines.count) lines):\n" + lines.joined(separator: "\n"))
    }

    // MARK: - Disks

    /// NBD exports through fresh overlays (or exported images for a command launcher that asks for them).
    func prepareDisks(commit: CommitRecord, instance: String, directory: String, settings: LaunchSettings) async throws -> [LaunchDisk] {
        var disks: [LaunchDisk] = []
        let useImages = settings.launcher == .command && settings.diskDelivery != .nbd
        for volume in commit.volumes.sorted(by: { $0.name < $1.name }) {
            var disk = LaunchDisk(volume: volume.name, size: volume.size)
            let reader = try store.reader(machine: commit.machine, volume: volume.name, point: "\(commit.id)")
            if useImages {
                let images = directory + "/images"
                try SystemCallsLite.makeDirectories(images)
                let raw = images + "/\(volume.name).raw"
                let store = self.store
                _ = try await LaunchThreads.pool.runIfActive { try store.export(reader, to: raw) }
                if settings.diskDelivery == .qcow2 {
                    let qcow2 = images + "/\(volume.name).qcow2"
                    let outcome = try await LaunchThreads.pool.runIfActive {
                        try ChildProcess.run("/usr/bin/qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2], input: Data(), timeout: 3600)
                    }
                    unlink(raw)
                    guard outcome.status == 0 else {
                        throw LifeboatError("launch.conversion-failed", "qemu-img convert to qcow2 failed: \(String(decoding: outcome.stderr, as: UTF8.self))")
                    }
                    disk.imagePath = qcow2
                    disk.imageFormat = "qcow2"
                } else {
                    disk.imagePath = raw
                    disk.imageFormat = "raw"
                }
            } else {
                let base = PointExport(name: "\(instance)-\(volume.name)@base", reader: reader)
                try SystemCallsLite.makeDirectories(directory + "/disks/" + volume.name)
                let overlay = try OverlayExport(name: Self.exportName(instance, volume.name), base: base, directory: directory + "/disks/" + volume.name)
                try nbd.register(overlay)
                active.withLock { $0[instance, default: ActiveInstance(overlays: [])].overlays.append(overlay) }
                disk.nbdHost = configuration.nbdHost
                let port = nbd.port ?? configuration.nbdPort
                disk.nbdPort = port
                disk.nbdExport = overlay.name
                disk.nbdURI = "\(configuration.nbdTLSDirectory == nil ? "nbd" : "nbds")://\(Self.uriHost(configuration.nbdHost)):\(port)/\(overlay.name)"
                disk.nbdTLSDirectory = configuration.nbdTLSDirectory
            }
            disks.append(disk)
        }
        return disks
    }

    /// Stops serving an instance's disks and deletes its overlays (and exported images); returns how many.
    @discardableResult
    func releaseDisks(_ instance: String) -> Int {
        let entry = active.withLock { $0.removeValue(forKey: instance) }
        var count = 0
        for overlay in entry?.overlays ?? [] {
            nbd.unregister(name: overlay.name)
            try? overlay.discard()
            count += 1
        }
        // Overlays this process never opened (after a restart) and exported images.
        let directory = configuration.instancesDirectory + "/" + instance
        for sub in ["disks", "images"] {
            let path = directory + "/" + sub
            if FileManager.default.fileExists(atPath: path) {
                if sub == "disks", entry == nil {
                    count += (try? FileManager.default.contentsOfDirectory(atPath: path).count) ?? 0
                }
                try? FileManager.default.removeItem(atPath: path)
            }
        }
        return count
    }

    // MARK: - After a restart, and while running

    /// Re-exports the overlays of instances that still hold disks; fails or finishes jobs a stopped server left.
    func reconcile() async {
        do {
            for instance in try catalog.instances() where instance.state == .running || instance.state == .stopped || instance.state == .terminating {
                reattach(instance)
            }
            for job in try catalog.startedJobs() {
                logger.warning("job \(job.id) was interrupted by a server stop: finishing it")
                for item in job.items where item.launchStatus == .pending || item.launchStatus == .inProgress {
                    switch job.type {
                    case .launch:
                        await failInterrupted(item, of: job)
                    case .terminate:
                        await terminate(item, of: job)
                    }
                }
                event(job.id, .jobEnd, detail: "finished after a server restart")
                try catalog.completeJob(job.id)
            }
        } catch {
            logger.error("cannot reconcile recovery instances after the start: \(error)")
        }
    }

    private func reattach(_ instance: InstanceRecord) {
        let runtime = instance.runtime.flatMap { try? InstanceRuntime(json: $0) }
        var overlays: [OverlayExport] = []
        do {
            guard let commit = store.commit(PointID(raw: instance.point)) else {
                throw LifeboatError("launch.point-gone", "point \(PointID(raw: instance.point)) is gone")
            }
            for volume in commit.volumes.sorted(by: { $0.name < $1.name }) {
                let directory = configuration.instancesDirectory + "/" + instance.id + "/disks/" + volume.name
                guard FileManager.default.fileExists(atPath: directory) else {
                    throw LifeboatError("launch.overlay-missing", "the overlay of volume \(volume.name) (\(directory)) is missing")
                }
                let reader = try store.reader(machine: commit.machine, volume: volume.name, point: "\(commit.id)")
                let base = PointExport(name: "\(instance.id)-\(volume.name)@base", reader: reader)
                let overlay = try OverlayExport(name: Self.exportName(instance.id, volume.name), base: base, directory: directory)
                try nbd.register(overlay)
                overlays.append(overlay)
            }
            logger.info("recovery instance \(instance.id) (\(instance.machine)): \(overlays.count) disk(s) served again")
        } catch {
            logger.error("recovery instance \(instance.id): its disks cannot be served again: \(error)")
            try? catalog.setInstanceState(instance.id, .stopped, reason: "disks unavailable after a server restart: \(error)")
        }
        active.withLock { $0[instance.id] = ActiveInstance(overlays: overlays, runtime: runtime, lastRunning: instance.state == .running) }
    }

    private func failInterrupted(_ item: JobItem, of job: JobRecord) async {
        let text = "the server stopped during the launch"
        if let record = try? catalog.instance(id: item.instance) {
            var runtime = record.runtime.flatMap { try? InstanceRuntime(json: $0) } ?? InstanceRuntime(launcher: record.launcher)
            if runtime.pid == nil, record.launcher == "qemu" {
                // Killed between starting QEMU and recording its pid: find it by its marker.
                let marker = QEMULauncher.marker(instance: item.instance)
                runtime.pid = DetachedProcess.find(marker: marker).first
                runtime.processMarker = marker
            }
            if let launcher = launchers[runtime.launcher] {
                let settings = (try? catalog.machine(named: item.machine))??.launchSettings ?? LaunchSettings()
                let request = LaunchRequest(
                    instance: item.instance, job: job.id, machine: item.machine, mode: record.mode, point: record.point,
                    pointCaptureTime: record.pointCaptureTime, disks: runtime.disks, settings: settings,
                    directory: configuration.instancesDirectory + "/" + item.instance
                )
                try? await launcher.terminate(runtime, request: request, log: { [self] line in event(job.id, .launcherOutput, item, detail: line) })
            }
        }
        releaseDisks(item.instance)
        if let point = item.point { try? store.unpin(PointID(raw: point), holder: Self.pinHolder(item.instance)) }
        event(job.id, .launchFailed, item, detail: "\(item.machine) was not launched", error: text)
        try? catalog.setInstanceState(item.instance, .failed, reason: text)
        try? catalog.setJobItem(job: job.id, instance: item.instance, status: .failed, error: text)
        try? catalog.recordLaunchOutcome(machine: item.machine, mode: job.mode ?? .test, passed: false)
    }

    /// Notices machines that stopped by themselves (STOPPED) or came back.
    func monitor() {
        let snapshot = active.withLock { $0 }
        for (id, instance) in snapshot {
            guard let runtime = instance.runtime, let launcher = launchers[runtime.launcher],
                let running = launcher.isRunning(runtime), instance.lastRunning != nil, running != instance.lastRunning
            else { continue }
            guard let record = try? catalog.instance(id: id), record.state == .running || record.state == .stopped else { continue }
            try? catalog.setInstanceState(id, running ? .running : .stopped, reason: running ? nil : "the machine stopped by itself; terminate it to release its disks and point")
            active.withLock { $0[id]?.lastRunning = running }
        }
    }

    // MARK: - Helpers

    static func pinHolder(_ instance: String) -> String { "instance:\(instance)" }

    static func exportName(_ instance: String, _ volume: String) -> String { "\(instance)-\(volume)" }

    static func uriHost(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    static func seconds(_ duration: Duration) -> String {
        let s = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return String(format: "%.1f s", s)
    }

    private func event(_ job: String, _ kind: JobEventKind, _ item: JobItem? = nil, detail: String, error: String? = nil) {
        do {
            try catalog.addJobEvent(job: job, kind, machine: item?.machine, instance: item?.instance, detail: detail, error: error)
        } catch {
            logger.error("cannot record \(kind.rawValue) of job \(job): \(error)")
        }
        if let error {
            logger.warning("\(kind.rawValue) \(item?.machine ?? ""): \(detail): \(error)", metadata: ["job": "\(job)"])
        } else {
            logger.info("\(kind.rawValue) \(item?.machine ?? ""): \(detail)", metadata: ["job": "\(job)"])
        }
    }
}

/// Directory creation without the store's error vocabulary.
enum SystemCallsLite {
    static func makeDirectories(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw LifeboatError("launch.directory", "cannot create \(path): check space and permissions", cause: error)
        }
    }
}
