// A notebook's figures are drawn for a wide Jupyter output area, so the page shows them scaled down; a click opens
// one at full size.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".cell_output img").forEach((img) => {
    const link = document.createElement("a");
    link.href = img.getAttribute("src");
    link.className = "full-size";
    link.title = "open at full size";
    img.replaceWith(link);
    link.append(img);
  });
});

// Display maths and Markdown tables wider than the text's column take the page's margin (course.css), as the
// notebook cells do: 136% of the column on a screen of 992 px or more. Maths wider still is scaled down to fit
// (MathJax sizes it in em); such a table scrolls. While one is on screen the page's contents fold away, as the
// theme does for the cells (its observer watches only the elements there before MathJax ran).
function widen() {
  if (!window.matchMedia("(min-width: 992px)").matches) return;
  const wide = [];
  const inCell = ".cell, .full-width, .tag_full-width";
  document.querySelectorAll(".bd-article div.math > mjx-container").forEach((maths) => {
    const column = maths.parentElement.clientWidth;
    const width = maths.firstElementChild.getBoundingClientRect().width;
    if (maths.closest(inCell) || width <= column + 1) return;
    if (width > 1.36 * column) {
      const size = parseFloat(getComputedStyle(maths).fontSize);
      maths.style.fontSize = `${(size * 1.36 * column) / width}px`;
    }
    maths.parentElement.classList.add("course-wide");
    wide.push(maths);
  });
  document.querySelectorAll(".bd-article .pst-scrollable-table-container").forEach((box) => {
    const table = box.querySelector("table");
    if (!table || box.closest(inCell)) return;
    table.style.width = "max-content";
    const width = table.getBoundingClientRect().width;
    table.style.width = "";
    // the ones squeezed: wider than the column at their natural width and of 4 columns or more, or overflowing
    if (box.scrollWidth <= box.clientWidth + 1 && (width <= box.clientWidth + 1 || table.rows[0].cells.length < 4)) {
      return;
    }
    box.classList.add("course-wide");
    wide.push(box);
  });
  const sidebar = document.querySelector("div.bd-sidebar-secondary");
  if (!sidebar || !wide.length) return;
  const onScreen = new Set();
  const observer = new IntersectionObserver((entries) => {
    entries.forEach((entry) => (entry.isIntersecting ? onScreen.add(entry.target) : onScreen.delete(entry.target)));
    sidebar.classList.toggle("course-hide", onScreen.size > 0);
  }, { rootMargin: "0px 0px -33% 0px" });
  wide.forEach((element) => observer.observe(element));
}

// After the page's MathJax has typeset it (its script is async: it runs before the load event).
window.addEventListener("load", () => {
  const typeset = window.MathJax && MathJax.startup && MathJax.startup.promise;
  (typeset || Promise.resolve()).then(widen);
});
