// Applied before first paint (a blocking script in <head>) so a saved theme never flashes.
try {
  const t = localStorage.getItem("parleyTheme");
  if (t === "dark" || t === "light") document.documentElement.dataset.theme = t;
} catch {}
