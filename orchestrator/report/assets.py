"""The report's stylesheet, inline in every document (nothing fetched). Sorting and filtering of the task
table are CSS only: radio buttons read with :has(), since the page runs no script."""

CSS = """
:root{--fg:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f1f5f9;--card:#fff;--ok:#16a34a;--bad:#dc2626;
--warn:#d97706}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 -apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Liberation Sans",sans-serif}
main{max-width:1280px;margin:0 auto;padding:28px 24px 40px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace;
font-size:12.5px}
header{margin-bottom:18px}
.eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:12px;color:var(--muted);font-weight:600}
h1{font-size:24px;margin:4px 0 10px;font-weight:650}
h1 code{font-size:21px}
h2{font-size:16px;margin:0 0 12px;font-weight:650}
h2 small{font-weight:400;color:var(--muted);font-size:13px;margin-left:6px}
h3{font-size:13px;margin:4px 0 6px;color:var(--muted);font-weight:600;text-transform:uppercase;
letter-spacing:.04em}
.pills{display:flex;gap:8px;flex-wrap:wrap}
.pill{display:inline-block;padding:3px 10px;border-radius:999px;background:#e2e8f0;font-size:12.5px;
font-weight:600}
.pill.ok{background:#dcfce7;color:#166534}.pill.bad{background:#fee2e2;color:#991b1b}
.pill.warn{background:#fef3c7;color:#92400e}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;
margin-bottom:16px;box-shadow:0 1px 2px rgba(15,23,42,.04)}
.ok-edge{border-left:5px solid var(--ok)}.bad-edge{border-left:5px solid var(--bad);background:#fff7f7}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.grid>.card{margin-bottom:16px}
.grid3{display:grid;grid-template-columns:1fr 1.1fr 1.3fr;gap:24px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 16px;margin:0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}dd code{font-size:12.5px}
.counts{display:grid;grid-template-columns:repeat(6,1fr);gap:10px;margin-bottom:12px}
.count{border:1px solid var(--line);border-top:4px solid var(--c);border-radius:8px;padding:8px 12px}
.count.zero{opacity:.45}
.count b{display:block;font-size:22px;line-height:1.2}.count span{color:var(--muted);font-size:12.5px}
.bar{display:flex;height:12px;border-radius:6px;overflow:hidden;background:var(--line)}
.bar span{display:block;height:100%}
.verdict{margin:0 0 10px;font-size:15px}.verdict.ok strong{color:var(--ok)}
.verdict.bad strong{color:var(--bad)}
.hash{display:flex;gap:12px;align-items:baseline;margin:4px 0}
.hash span{color:var(--muted);min-width:230px}
.hash code{background:#f8fafc;border:1px solid var(--line);border-radius:6px;padding:4px 8px;
overflow-wrap:anywhere}
.note{color:var(--muted);font-size:12.5px;margin:10px 0 0}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:12.5px;margin-bottom:8px;align-items:center}
.legend i{display:inline-block;width:14px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.legend i.dia{width:9px;height:9px;transform:rotate(45deg);border-radius:1px;margin:0 7px 0 3px}
.legend .muted{color:var(--muted)}
svg.timeline{display:block;width:100%;height:auto}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;
letter-spacing:.03em;border-bottom:2px solid var(--line);padding:6px 8px;white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:5px 8px;vertical-align:top}
table.tasks td{font-size:13px}table.tasks code{font-size:11.5px;white-space:nowrap}
.sub{color:var(--muted);font-size:11.5px}
table.tasks td:nth-child(2){min-width:240px}table.tasks td:nth-child(5){width:45%}
table.tasks tbody tr:nth-child(even){background:#f8fafc}
td.num,td.idx{text-align:right;font-variant-numeric:tabular-nums}td.idx{color:var(--muted)}
td .why{color:#334155;overflow-wrap:anywhere;margin-bottom:2px}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;
color:var(--c);background:color-mix(in srgb,var(--c) 12%,white);border:1px solid
color-mix(in srgb,var(--c) 35%,white)}
table.mini{width:auto;min-width:220px;margin-bottom:12px}table.mini.wide{width:100%}
table.mini.wide td:nth-child(2){white-space:nowrap}
table.mini td,table.mini th{padding:4px 8px;font-size:12.5px}
.hist{display:grid;grid-template-columns:max-content 1fr max-content;gap:7px 10px;align-items:center;
font-size:12.5px}
.hrow{display:contents}
.hrow b{text-align:right;font-variant-numeric:tabular-nums}
.hbar{background:#f1f5f9;border-radius:4px;height:12px;overflow:hidden}.hbar i{display:block;height:100%}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
.banner{position:sticky;top:0;z-index:5;padding:10px 16px;border-radius:8px;margin-bottom:14px;font-weight:650}
.banner.bad{background:#dc2626;color:#fff;box-shadow:0 2px 6px rgba(220,38,38,.35)}
.legend i.gap{background:repeating-linear-gradient(45deg,#94a3b8 0 2px,#f1f5f9 2px 6px)}
.controls{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:6px 0}
.controls input{position:absolute;opacity:0;pointer-events:none}
.controls label{border:1px solid var(--line);border-radius:999px;padding:2px 10px;font-size:12.5px;
cursor:pointer;background:#f8fafc}
.controls input:checked+label{background:#0f172a;color:#fff;border-color:#0f172a}
.ctl-label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em;min-width:44px}
.card:has(#sort-plan:checked) table.tasks tbody{display:flex;flex-direction:column}
.card:has(#sort-plan:checked) table.tasks tr{display:grid;order:var(--p);
grid-template-columns:44px 280px 240px 190px 1fr}
.card:has(#sort-plan:checked) table.tasks thead{display:block}
.card:has(#sort-plan:checked) table.tasks td{width:auto;min-width:0}
.story{font-size:12.5px;min-width:230px}.story ol{margin:4px 0 0;padding-left:0;list-style:none}
.story li{margin:2px 0;color:#334155}.story li .t{color:var(--muted);font-variant-numeric:tabular-nums}
.story li.esc{background:#fff7ed;border-left:3px solid #ea580c;padding-left:5px}
.story li.ev{color:var(--muted)}
.story summary{cursor:pointer}
.flag{display:inline-block;background:#ea580c;color:#fff;border-radius:4px;padding:0 5px;font-size:11px}
.code{white-space:nowrap}.code.rec code{color:var(--muted)}
.rec-tag{display:inline-block;background:#dcfce7;color:#166534;border-radius:4px;padding:0 5px;font-size:11px;
font-weight:600}
i.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 2px;vertical-align:-1px}
.hbar{display:flex}
tr.ev-run_interrupted td{background:#fef3c7}tr.ev-run_resumed td{background:#dbeafe}
ul.gaps{margin:0 0 8px;padding-left:18px;font-size:12.5px}
.card:has(#show-failed:checked) table.tasks tbody tr:not(.o-failed){display:none}
.card:has(#show-timed_out:checked) table.tasks tbody tr:not(.o-timed_out){display:none}
.card:has(#show-blocked:checked) table.tasks tbody tr:not(.o-blocked){display:none}
.card:has(#show-pending:checked) table.tasks tbody tr:not(.o-pending){display:none}
.card:has(#show-skipped:checked) table.tasks tbody tr:not(.o-skipped){display:none}
.card:has(#show-deleted:checked) table.tasks tbody tr:not(.o-deleted){display:none}
@media (max-width:900px){.grid,.grid3{grid-template-columns:1fr}.counts{grid-template-columns:repeat(3,1fr)}}
@media print{body{background:#fff}main{max-width:none;padding:0}.card{box-shadow:none;break-inside:avoid-page}
table.tasks{break-inside:auto}}
"""
