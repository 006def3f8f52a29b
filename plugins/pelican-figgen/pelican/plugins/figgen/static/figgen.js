// figgen's loader: enhances each interactive figure of the page with its own module.
// A figure names two files beside its image: data-figgen-module (an ES module exporting
// enhance(figure, data)) and data-figgen-data (JSON). Both are plain file names, resolved
// against the image's URL, so they work at any page depth; anything else is refused.
// Nothing here or in a module is inline: a strict Content-Security-Policy allows it.

const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function beside(img, name) {
  if (!FILE_NAME.test(name || "")) throw new Error(`not a file name: ${name}`);
  return new URL(name, new URL(img.getAttribute("src"), document.baseURI));
}

async function enhance(figure) {
  const img = figure.querySelector("img");
  try {
    const moduleUrl = beside(img, figure.dataset.figgenModule);
    const dataUrl = beside(img, figure.dataset.figgenData);
    const [module, data] = await Promise.all([
      import(moduleUrl.href),
      fetch(dataUrl).then((r) => {
        if (!r.ok) throw new Error(`${dataUrl}: ${r.status}`);
        return r.json();
      }),
    ]);
    await module.enhance(figure, data);
    figure.dataset.figgenReady = "true";
  } catch (err) {
    // The static image stays as it was: the figure is still whole without its layer.
    figure.dataset.figgenReady = "failed";
    console.warn(`figgen: ${figure.id} stays static:`, err);
  }
}

// Each figure is enhanced when it comes near the viewport, not on load: a page's first paint
// and its main thread owe nothing to the figures below the fold (their modules, data and
// set-up wait until the reader scrolls towards them).
const figures = document.querySelectorAll("figure[data-figgen-module][data-figgen-data]");
if ("IntersectionObserver" in window) {
  const near = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      near.unobserve(entry.target);
      enhance(entry.target);
    }
  }, { rootMargin: "400px 0px" });
  figures.forEach((figure) => near.observe(figure));
} else {
  figures.forEach(enhance);
}
