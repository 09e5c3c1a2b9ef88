import Catalog
import LifeboatCore
import Metrics
public import Prometheus
import StagingStore
import Synchronization

/// The Prometheus metrics served at `/metrics`: replication lag, backlog and state per machine, job durations,
/// the RTO of each machine's last launch, the store's size, API latency (Hummingbird's `MetricsMiddleware`
/// through swift-metrics) and login failures. Catalog-derived values are refreshed when scraped.
public final class ControlPlaneMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let observedJobs = Mutex<Set<String>>([])
    private let jobDurations: DurationHistogram
    private let loginFailures: Prometheus.Counter
    private static let states = [
        "INITIATING", "INITIAL_SYNC", "CONTINUOUS", "BACKLOG", "RESCAN", "STALLED", "DISCONNECTED", "PAUSED", "STOPPED",
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        jobDurations = registry.makeDurationHistogram(
            descriptor: Self.name("job_duration", "seconds", "How long launch and terminate jobs took, from creation to completion."),
            buckets: [.seconds(1), .seconds(5), .seconds(15), .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(900)]
        )
        loginFailures = registry.makeCounter(
            descriptor: Self.name("login_failures", "total", "Refused logins (wrong password, unknown or disabled user).")
        )
    }

    static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "lifeboat", metricName: metric, unitName: unit, helpText: help)
    }

    /// Routes swift-metrics (Hummingbird's request metrics: `http_requests_total`, `http_request_duration_seconds`)
    /// into this registry. Once per process.
    public func bootstrapSwiftMetrics() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    func loginFailed() { loginFailures.increment() }

    func launchRequested(mode: LaunchMode) {
        registry.makeCounter(
            descriptor: Self.name("launches", "total", "Launch jobs requested through the API, by mode."),
            labels: [("mode", mode.rawValue)]
        ).increment()
    }

    private func gauge(_ metric: String, _ unit: String, _ help: String, _ labels: [(String, String)] = []) -> Prometheus.Gauge {
        registry.makeGauge(descriptor: Self.name(metric, unit, help), labels: labels)
    }

    /// Reads the catalog and the store into the gauges, then renders the text format.
    func render(catalog: Catalog, store: Store, now: Timestamp) throws -> String {
        let machines = try catalog.machines()
        for m in machines {
            let labels = [("machine", m.name)]
            gauge("replication_lag", "seconds", "Now minus the capture time of the newest crash-consistent recovery point (the current RPO); -1 before the first.", labels)
                .set(to: m.lagSeconds(now: now) ?? -1)
            gauge("replication_backlog", "bytes", "Changed bytes the agent has not sent yet.", labels).set(to: Double(m.backlogBytes))
            gauge("replication_connected", "", "1 while the machine's agent is connected.", labels).set(to: m.connected ? 1 : 0)
            for state in Self.states {
                gauge("replication_state", "", "1 for the machine's current replication state, 0 for the others.", [("machine", m.name), ("state", state)])
                    .set(to: m.state == state ? 1 : 0)
            }
        }
        let jobs = try catalog.jobs(limit: 10_000)
        for job in jobs where job.status == .completed {
            guard let ended = job.endedAt, observedJobs.withLock({ $0.insert(job.id).inserted }) else { continue }
            jobDurations.record(.nanoseconds(ended.nanoseconds - job.createdAt.nanoseconds))
        }
        var lastRTO: [String: Double] = [:]
        for job in jobs.reversed() where job.type == .launch {
            for item in job.items { if let rto = item.rtoSeconds { lastRTO[item.machine] = rto } }
        }
        for (machine, rto) in lastRTO {
            gauge("launch_rto", "seconds", "The measured RTO of the machine's last successful launch (job creation to acceptance checks passed).", [("machine", machine)])
                .set(to: rto)
        }
        gauge("recovery_instances", "", "Recovery instances holding resources.").set(to: Double(try catalog.instances().count))
        let stats = try store.stats()
        gauge("store", "bytes", "Bytes of packs in the staging store.").set(to: Double(stats.packBytes))
        gauge("store_points", "", "Recovery points in the staging store.").set(to: Double(stats.points))
        return registry.emitToString()
    }
}
