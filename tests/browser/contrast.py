"""WCAG contrast of what a page shows, computed in the browser from the computed styles (offline; no axe).

`AUDIT_JS` takes a CSS selector of the area to check and returns one record per failing text: every
visible element with text of its own, and every placeholder, whose colour against the background it is
drawn on (ancestors' background colours blended, element opacity applied) is below 4.5:1 (WCAG 2 AA for
normal text). Disabled controls are left out (WCAG exempts inactive components).
"""

from __future__ import annotations

AA = 4.5

AUDIT_JS = """
(root) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
  });
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const ratio = (a, b) => {
    const x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = {r: 255, g: 255, b: 255, a: 1};
    if (document.body.classList.contains('dark') || document.documentElement.classList.contains('dark')) {
      const b = parse(getComputedStyle(document.body).backgroundColor);
      if (b && b.a >= 1) bg = b;
    }
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && el.offsetParent !== null;
  };
  const describe = (el) =>
    (el.id ? '#' + el.id : el.tagName.toLowerCase() + '.' + [...el.classList].join('.'))
    + ' in ' + ((el.closest('[id]') || {}).id || '?');
  const out = [];
  const check = (el, colour, text, what) => {
    const fg0 = parse(colour);
    if (!fg0) return;
    const bg = background(el);
    const fg = over({...fg0, a: fg0.a * opacity(el)}, bg);
    const r = ratio(fg, bg);
    if (r < %AA%) out.push({what, text: text.slice(0, 40), where: describe(el),
      ratio: Math.round(r * 100) / 100, fg: colour,
      bg: `rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)})`});
  };
  const area = document.querySelector(root) || document.body;
  for (const el of area.querySelectorAll('*')) {
    if (!visible(el) || el.closest('[disabled], [aria-disabled="true"], svg, canvas')) continue;
    if (['SCRIPT', 'STYLE'].includes(el.tagName)) continue;
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
    if (own) check(el, getComputedStyle(el).color, own, 'text');
    if ((el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') && el.placeholder && !el.value)
      check(el, getComputedStyle(el, '::placeholder').color, el.placeholder, 'placeholder');
  }
  return out;
}
""".replace("%AA%", str(AA))
