// Ctrl+Up / Ctrl+Down (Cmd on a Mac) in a prompt box changes the attention weight of the selection, or
// of the word at the cursor, by 0.1 in A1111's syntax: "cat" -> "(cat:1.1)" -> "(cat:1.2)"; back at
// 1.0 the parentheses go. With the cursor inside "(a red cat:1.2)" the whole group is changed.
(() => {
  const STEP = 0.1;
  const ENDS_WORD = ' \t\n,.()[]{}<>|:;';
  const WEIGHT_AFTER = /^:\s*(-?\d+(?:\.\d+)?)\s*\)/;
  const isPrompt = (el) => !!el && el.tagName === 'TEXTAREA' &&
    !!el.closest('[id$="_prompt"], [id$="_neg_prompt"]');
  const format = (w) => (Number.isInteger(w) ? w.toFixed(1) : String(w));

  // the [start, end) the key acts on when nothing is selected: the weighted group around the cursor,
  // else the word at the cursor; null when there is none
  const around = (text, at) => {
    const open = text.lastIndexOf('(', at - 1);
    const close = text.indexOf(')', at);
    if (open >= 0 && close >= 0) {
      const inner = text.slice(open + 1, close);
      const colon = inner.lastIndexOf(':');
      if (!/[()]/.test(inner) && colon >= 0 && WEIGHT_AFTER.test(inner.slice(colon) + ')')) {
        return [open + 1, open + 1 + colon];
      }
    }
    let start = at;
    let end = at;
    while (start > 0 && !ENDS_WORD.includes(text[start - 1])) start--;
    while (end < text.length && !ENDS_WORD.includes(text[end])) end++;
    return start < end ? [start, end] : null;
  };

  const edit = (box, up) => {
    const text = box.value;
    let start = box.selectionStart;
    let end = box.selectionEnd;
    if (start === end) {
      const found = around(text, start);
      if (!found) return false;
      [start, end] = found;
    }
    while (start < end && /\s/.test(text[start])) start++;
    while (end > start && /\s/.test(text[end - 1])) end--;
    if (start === end) return false;
    const picked = text.slice(start, end);
    let before = text.slice(0, start);
    let after = text.slice(end);
    let weight = 1;
    const m = after.match(WEIGHT_AFTER);
    if (before.endsWith('(') && m) {
      weight = parseFloat(m[1]);
      before = before.slice(0, -1);
      after = after.slice(m[0].length);
    }
    weight = Math.round((weight + (up ? STEP : -STEP)) * 100) / 100;
    const wrapped = weight === 1 ? picked : `(${picked}:${format(weight)})`;
    const at = before.length + (weight === 1 ? 0 : 1);
    box.value = before + wrapped + after;
    box.setSelectionRange(at, at + picked.length);
    box.dispatchEvent(new Event('input', {bubbles: true}));
    return true;
  };

  document.addEventListener('keydown', (e) => {
    if (!(e.ctrlKey || e.metaKey) || (e.key !== 'ArrowUp' && e.key !== 'ArrowDown')) return;
    if (!isPrompt(e.target)) return;
    if (edit(e.target, e.key === 'ArrowUp')) e.preventDefault();
  });
})();
