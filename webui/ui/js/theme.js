// The theme (light, dark, or follow the system) of the signed-in user, applied to the page.
// The server's choice (Settings -> "Theme and UI defaults", kept per user in ui-users.json) arrives
// with the page load and is handed to sfTheme.set; until then the browser's last known choice is used,
// set before Gradio draws anything, so a reload does not flash the other theme.
// Gradio itself puts the `dark` class on <body> from the system's preference (when it mounts and when
// the preference changes): an observer puts ours back.
(() => {
  const KEY = 'sfumato-theme';
  const CHOICES = ['system', 'light', 'dark'];
  const media = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;
  let choice = 'system';
  try {
    const kept = window.localStorage.getItem(KEY);
    if (CHOICES.includes(kept)) choice = kept;
  } catch (e) { /* storage off: the server's choice comes with the page load */ }
  const dark = () => choice === 'dark' || (choice === 'system' && !!media && media.matches);
  const apply = () => {
    const want = dark();
    const root = document.documentElement;
    root.style.colorScheme = want ? 'dark' : 'light';
    root.classList.toggle('sf-dark', want);
    root.style.backgroundColor = want ? '#0b0f19' : '';  // before Gradio's own styles arrive
    const body = document.body;
    if (!body) return;
    if (body.classList.contains('dark') !== want) body.classList.toggle('dark', want);
    if (body.dataset.sfTheme !== choice) body.dataset.sfTheme = choice;
  };
  window.sfTheme = {
    get: () => choice,
    set(value) {
      if (CHOICES.includes(value)) {
        choice = value;
        try { window.localStorage.setItem(KEY, value); } catch (e) { /* kept for this page only */ }
        apply();
      }
      return value;
    },
  };
  const watch = () => {
    apply();
    new MutationObserver(apply).observe(document.body, {attributes: true, attributeFilter: ['class']});
  };
  apply();
  if (document.body) watch();
  else {
    new MutationObserver((_, seen) => {
      if (document.body) { seen.disconnect(); watch(); }
    }).observe(document.documentElement, {childList: true});
  }
  if (media && media.addEventListener) media.addEventListener('change', apply);
})();
