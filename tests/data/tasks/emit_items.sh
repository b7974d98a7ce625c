#!/bin/sh
# emit_items.sh "a,b"  ->  <items><item>a</item><item>b</item></items>
printf '<items>'
IFS=','
for i in $1; do printf '<item>%s</item>' "$i"; done
printf '</items>\n'
