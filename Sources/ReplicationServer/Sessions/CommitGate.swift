/// The staging store builds one commit at a time: sessions take turns, in arrival order. A session waiting here
/// does not read its connection, so its agent is slowed by TCP back-pressure rather than refused.
actor CommitGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !busy {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    /// Takes the turn only when nobody holds it or waits for it (background work that must not delay sessions).
    func tryAcquire() -> Bool {
        if busy { return false }
        busy = true
        return true
    }

    func release() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }
}
