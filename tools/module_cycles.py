#!/usr/bin/env python3
"""Import cycles between engine/'s top-level modules.

Reads every `crate::<module>` reference outside `#[cfg(test)]` code (main.rs and cli/, the
binary, are left out), builds the module graph and prints each strongly connected component
of more than one module with the edges inside it: those edges are the ones to cut. Prints
nothing when engine/ has no cycle. Exit code 1 when there is a cycle.

    python3 tools/module_cycles.py
"""
import re,os,sys,collections
root=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..','engine')
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)
        top=rel.split('/')[0].replace('.rs','')
        if top in ('main','cli','lib'): continue
        text=open(p).read()
        # strip test modules
        i=text.find('#[cfg(test)]')
        if i>=0: text=text[:i]
        # comments (doc links included) are not imports
        text=re.sub(r'//[^\n]*','',text)
        mods.setdefault(top,set())
        for m in re.findall(r'crate::([a-z_]+)',text):
            if m!=top: mods[top].add(m)
        # super:: from nested file refers to same top; ignore
g={k:{x for x in v if x in mods} for k,v in mods.items()}
# tarjan
index={};low={};st=[];on=set();res=[];c=[0]
def sc(v):
    index[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in g[v]:
        if w not in index: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],index[w])
    if low[v]==index[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        res.append(comp)
sys.setrecursionlimit(10000)
for v in g:
    if v not in index: sc(v)
for comp in res:
    if len(comp)>1:
        print(len(comp),sorted(comp))
        for a in sorted(comp):
            print('  ',a,'->',sorted(x for x in g[a] if x in comp))
sys.exit(1 if any(len(c)>1 for c in res) else 0)
