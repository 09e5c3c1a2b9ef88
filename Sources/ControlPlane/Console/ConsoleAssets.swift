/// The console's stylesheet and script, compiled into the binary (no build step, no external files).
enum ConsoleAssets {
    static let css = #"""
        :root { --fg:#1d2430; --muted:#5b6576; --line:#d9dee6; --bg:#f6f7f9; --card:#fff; --accent:#1f5fbf;
          --good:#1e7b34; --warn:#a15c00; --bad:#b3261e; --idle:#6b7280; --info:#1f5fbf; --drill:#7b3fbf; }
        * { box-sizing: border-box; }
        body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
        header { background:#14213d; color:#fff; display:flex; flex-wrap:wrap; align-items:center; gap:.25rem 1rem; padding:.5rem 1rem; }
        header .brand { font-weight:700; letter-spacing:.02em; margin-right:1rem; color:#fff; text-decoration:none; }
        header nav { display:flex; flex-wrap:wrap; gap:.25rem; }
        header nav a { color:#dbe4f3; text-decoration:none; padding:.35rem .6rem; border-radius:6px; }
        header nav a[aria-current="page"], header nav a:hover, header nav a:focus { background:#24365e; color:#fff; }
        header .who { margin-left:auto; display:flex; gap:.5rem; align-items:center; font-size:.9rem; color:#dbe4f3; }
        main { padding:1rem; max-width:1400px; margin:0 auto; }
        h1 { font-size:1.35rem; margin:.25rem 0 1rem; }
        h2 { font-size:1.1rem; margin:1.5rem 0 .5rem; }
        .card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:1rem; margin-bottom:1rem; }
        .toolbar { display:flex; flex-wrap:wrap; gap:.5rem; align-items:end; margin-bottom:.75rem; }
        .toolbar .grow { flex:1; }
        label { display:block; font-size:.85rem; color:var(--muted); margin-bottom:.2rem; }
        input[type=text], input[type=search], input[type=password], input[type=number], select, textarea {
          font:inherit; padding:.45rem .55rem; border:1px solid #b8c0cc; border-radius:6px; background:#fff; min-width:0; width:100%; }
        textarea { min-height:5rem; }
        button, .button { font:inherit; padding:.45rem .8rem; border-radius:6px; border:1px solid #b8c0cc; background:#fff; color:var(--fg); cursor:pointer; text-decoration:none; display:inline-block; }
        button.primary { background:var(--accent); border-color:var(--accent); color:#fff; }
        button.danger { background:var(--bad); border-color:var(--bad); color:#fff; }
        button:disabled { opacity:.5; cursor:not-allowed; }
        button:focus-visible, a:focus-visible, input:focus-visible, select:focus-visible { outline:3px solid #8fb3ff; outline-offset:1px; }
        .table-wrap { overflow-x:auto; }
        table { width:100%; border-collapse:collapse; background:var(--card); }
        th, td { text-align:left; padding:.5rem .6rem; border-bottom:1px solid var(--line); vertical-align:top; }
        th { font-size:.8rem; text-transform:uppercase; letter-spacing:.03em; color:var(--muted); background:#fafbfc; }
        tr.selected td { background:#eef4ff; }
        .status { display:inline-flex; align-items:center; gap:.4rem; font-weight:600; white-space:nowrap; }
        .status .dot { width:.7rem; height:.7rem; border-radius:50%; background:currentColor; display:inline-block; }
        .status.good { color:var(--good); } .status.warn { color:var(--warn); } .status.bad { color:var(--bad); }
        .status.idle { color:var(--idle); } .status.info { color:var(--info); } .status.drill { color:var(--drill); }
        .muted { color:var(--muted); font-size:.9rem; }
        .flash { padding:.6rem .8rem; border-radius:8px; margin-bottom:1rem; border:1px solid; }
        .flash.error { background:#fdecea; border-color:#f1b0aa; color:#7a1a14; }
        .flash.ok { background:#e8f5ec; border-color:#a8d5b5; color:#14532d; }
        .flash.note { background:#fff7e6; border-color:#f3d19c; color:#6b3f00; }
        .menu { position:relative; display:inline-block; }
        .menu [role=menu] { position:absolute; right:0; top:calc(100% + 4px); background:#fff; border:1px solid var(--line); border-radius:8px;
          box-shadow:0 6px 24px rgba(0,0,0,.12); min-width:16rem; z-index:5; padding:.25rem; }
        .menu [role=menu][hidden] { display:none; }
        .menu [role=menuitem] { display:block; width:100%; text-align:left; border:0; background:none; padding:.55rem .7rem; border-radius:6px; }
        .menu [role=menuitem]:hover, .menu [role=menuitem]:focus { background:#eef4ff; }
        .menu [role=menuitem] small { display:block; color:var(--muted); }
        dialog { border:0; border-radius:12px; padding:0; width:min(720px, 96vw); box-shadow:0 20px 60px rgba(0,0,0,.3); }
        dialog::backdrop { background:rgba(15,23,42,.45); }
        dialog header { border-radius:12px 12px 0 0; }
        dialog .body { padding:1rem; max-height:65vh; overflow:auto; }
        dialog .actions { display:flex; justify-content:flex-end; gap:.5rem; padding:.75rem 1rem; border-top:1px solid var(--line); }
        fieldset { border:1px solid var(--line); border-radius:8px; margin:0 0 1rem; padding:.5rem .75rem; }
        legend { font-weight:700; padding:0 .3rem; }
        .point { display:flex; gap:.6rem; align-items:baseline; padding:.3rem .2rem; border-radius:6px; }
        .point:hover { background:#f3f6fb; }
        .point label { display:inline; color:var(--fg); font-size:1rem; margin:0; }
        .tag { display:inline-block; font-size:.75rem; padding:.05rem .4rem; border-radius:999px; background:#e8eef8; color:#24365e; margin-left:.3rem; }
        .pager { display:flex; gap:.5rem; align-items:center; margin-top:.75rem; }
        .log { font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace; }
        .log td { padding:.25rem .5rem; }
        .grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(260px,1fr)); gap:1rem; }
        .inline-form { display:inline; }
        @media (max-width: 640px) {
          main { padding:.5rem; } header .who { margin-left:0; width:100%; }
          th.optional, td.optional { display:none; }
          .toolbar > * { flex:1 1 100%; }
        }
        """#

    static let js = #"""
        "use strict";
        (function () {
          const $ = (s, r = document) => r.querySelector(s);
          const $$ = (s, r = document) => Array.from(r.querySelectorAll(s));

          // Machines page: selection, the Launch target machines menu, the Choose recovery point dialog.
          const table = $("#machines");
          if (table) {
            const launchButton = $("#launch-button");
            const menu = $("#launch-menu");
            const count = $("#selected-count");
            const selected = () => $$("input[name=machine]:checked", table).map(b => b.value);
            const matching = $("#select-matching");
            let allMatching = false;
            const refresh = () => {
              const n = selected().length;
              const all = $("#select-all");
              if (n < $$("input[name=machine]", table).length) allMatching = false;
              $$("tr[data-machine]", table).forEach(r => r.classList.toggle("selected", $("input[name=machine]", r).checked));
              if (launchButton) launchButton.disabled = n === 0 && !allMatching;
              if (matching) matching.hidden = !(all && all.checked) || allMatching;
              if (count) count.textContent = allMatching ? "All " + table.dataset.total + " machines that match are selected"
                : (n === 0 ? "No machine selected" : (n === 1 ? "1 machine selected" : n + " machines selected"));
            };
            table.addEventListener("change", e => {
              if (e.target.id === "select-all") $$("input[name=machine]", table).forEach(b => { b.checked = e.target.checked; });
              refresh();
            });
            if (matching) matching.addEventListener("click", () => { allMatching = true; refresh(); if (launchButton) launchButton.focus(); });
            if (launchButton && menu) {
              launchButton.addEventListener("click", () => {
                const open = menu.hidden;
                menu.hidden = !open;
                launchButton.setAttribute("aria-expanded", String(open));
                if (open) { const first = $("[role=menuitem]:not([disabled])", menu); if (first) first.focus(); }
              });
              menu.addEventListener("keydown", e => {
                const items = $$("[role=menuitem]:not([disabled])", menu);
                const i = items.indexOf(document.activeElement);
                if (e.key === "ArrowDown") { e.preventDefault(); items[(i + 1) % items.length].focus(); }
                if (e.key === "ArrowUp") { e.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
                if (e.key === "Escape") { menu.hidden = true; launchButton.setAttribute("aria-expanded", "false"); launchButton.focus(); }
              });
              document.addEventListener("click", e => {
                if (!menu.hidden && !menu.contains(e.target) && e.target !== launchButton) { menu.hidden = true; launchButton.setAttribute("aria-expanded", "false"); }
              });
              $$("[role=menuitem]", menu).forEach(item => item.addEventListener("click", () => {
                menu.hidden = true;
                launchButton.setAttribute("aria-expanded", "false");
                openPointDialog(item.dataset.mode, selected(), allMatching ? Number(table.dataset.total) : 0);
              }));
            }
            refresh();
          }

          async function openPointDialog(mode, machines, everyMatching) {
            const dialog = $("#point-dialog");
            if (!dialog || (machines.length === 0 && !everyMatching)) return;
            $("#point-scope", dialog).value = everyMatching ? "matching" : "selected";
            $("#point-mode", dialog).value = mode;
            const incident = $("#point-incident", dialog);
            if (incident) { incident.disabled = mode === "TEST"; incident.closest("p").hidden = mode === "TEST"; }
            $("#point-dialog-title", dialog).textContent = "Choose recovery point — " + (mode === "TEST" ? "Test Mode (drill)" : "Recovery Mode");
            const list = $("#point-list", dialog);
            list.textContent = "Loading recovery points…";
            dialog.showModal();
            if (everyMatching) {
              list.textContent = "All " + everyMatching + " machines that match the filter launch, each from its latest recovery point. To choose earlier points, select machines on the page instead.";
              $("#point-expected", dialog).value = String(everyMatching);
              $("#point-continue", dialog).focus();
              return;
            }
            const parts = [];
            for (const m of machines) {
              const fs = document.createElement("fieldset");
              const lg = document.createElement("legend");
              lg.textContent = m;
              fs.appendChild(lg);
              const hidden = document.createElement("input");
              hidden.type = "hidden"; hidden.name = "machine"; hidden.value = m;
              fs.appendChild(hidden);
              try {
                const r = await fetch("/api/v1/machines/" + encodeURIComponent(m) + "/points?consistent=true&limit=25", { credentials: "same-origin" });
                if (!r.ok) throw new Error((await r.json()).error.message);
                const page = await r.json();
                if (page.items.length === 0) {
                  const p = document.createElement("p"); p.className = "muted";
                  p.textContent = "No recovery point yet: this machine cannot be launched until its initial sync completes.";
                  fs.appendChild(p);
                }
                page.items.forEach((pt, i) => {
                  const row = document.createElement("div"); row.className = "point";
                  const id = "pt-" + m + "-" + pt.id;
                  const radio = document.createElement("input");
                  radio.type = "radio"; radio.name = "point:" + m; radio.id = id; radio.value = i === 0 ? "latest" : pt.id; radio.required = true;
                  if (i === 0) radio.checked = true;
                  const label = document.createElement("label"); label.htmlFor = id;
                  label.textContent = (i === 0 ? "Latest — " : "") + pt.captureTime.replace("T", " ").replace("Z", " UTC");
                  const tag = document.createElement("span"); tag.className = "tag"; tag.textContent = pt.id;
                  label.appendChild(tag);
                  row.appendChild(radio); row.appendChild(label); fs.appendChild(row);
                });
                if (page.total > page.items.length) {
                  const more = document.createElement("p"); more.className = "muted";
                  more.textContent = "Showing the " + page.items.length + " newest of " + page.total + " points; older ones: lifeboat points " + m + " --limit N.";
                  fs.appendChild(more);
                }
              } catch (err) {
                const p = document.createElement("p"); p.className = "flash error"; p.textContent = "Could not load the points of " + m + ": " + err.message;
                fs.appendChild(p);
              }
              parts.push(fs);
            }
            list.textContent = "";
            parts.forEach(p => list.appendChild(p));
            const first = $("input[type=radio]", list); if (first) first.focus();
          }
          const dialog = $("#point-dialog");
          if (dialog) $("#point-cancel", dialog).addEventListener("click", () => dialog.close());

          // Machines page: refresh the rows every 5 s (keeping the selection) while no dialog is open.
          const rows = $("#machine-rows");
          if (rows && rows.dataset.fragment) {
            setInterval(async () => {
              if ($("dialog[open]") || document.hidden) return;
              const keep = new Set($$("input[name=machine]:checked").map(b => b.value));
              const r = await fetch(rows.dataset.fragment, { credentials: "same-origin" });
              // A session that ended answers with the login page: go there rather than into the table.
              if (r.redirected || !r.ok) { if (r.redirected) location.reload(); return; }
              rows.innerHTML = await r.text();
              $$("input[name=machine]", rows).forEach(b => { b.checked = keep.has(b.value); });
              table.dispatchEvent(new Event("change"));
            }, 5000);
          }

          // Job page: the live event log over server-sent events.
          const log = $("#job-log");
          if (log && log.dataset.stream) {
            const source = new EventSource(log.dataset.stream);
            source.addEventListener("error", () => { if (source.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 2000); });
            source.addEventListener("event", e => {
              const ev = JSON.parse(e.data);
              const tr = document.createElement("tr");
              [ev.time.replace("T", " ").replace("Z", ""), ev.kind, ev.machine || "", ev.detail + (ev.error ? " — error: " + ev.error : "")].forEach(t => {
                const td = document.createElement("td"); td.textContent = t; tr.appendChild(td);
              });
              if (ev.kind.includes("FAILED")) tr.className = "failed";
              $("tbody", log).appendChild(tr);
            });
            source.addEventListener("job", e => {
              const job = JSON.parse(e.data);
              const st = $("#job-status"); if (st) st.textContent = job.status;
              job.items.forEach(item => {
                const cell = $("[data-item-status='" + item.instance + "']"); if (cell) cell.textContent = item.launchStatus;
                const rto = $("[data-item-rto='" + item.instance + "']"); if (rto && item.rtoSeconds) rto.textContent = item.rtoSeconds.toFixed(1) + " s";
              });
              if (job.status === "COMPLETED") { source.close(); setTimeout(() => location.reload(), 800); }
            });
          }
        })();
        """#
}
