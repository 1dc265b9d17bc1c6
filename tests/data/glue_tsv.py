"""Writing small GLUE-style TSV files for the reader tests."""

import os


def write(root, rel, lines, *, bom=False, newline='\n'):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  text = ''.join(line + newline for line in lines)
  with open(
      path, 'w', encoding='utf-8-sig' if bom else 'utf-8', newline=''
  ) as f:
    f.write(text)
  return path


def tsv(*fields):
  return '\t'.join(fields)


def mnli_row(n_fields, s1, s2, label=None):
  fields = [str(i) for i in range(n_fields)]
  fields[8], fields[9] = s1, s2
  if label is not None:
    fields[-1] = label
  return tsv(*fields)
